"""A one-line description of the machine a run or benchmark ran on (for reports)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def describe() -> str:
    """``"2 cores (AMD EPYC), no GPU, torch 2.14.1"``: cores, CPU model, GPU and torch."""
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, torch {torch.__version__}"
