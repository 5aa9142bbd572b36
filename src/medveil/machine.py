"""The machine: the device a computation runs on, and a one-line description for reports."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from medveil.errors import ConfigError

__all__ = ["describe", "load_cuda_linalg", "resolve_device"]


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


def resolve_device(device: str) -> torch.device:
    """The torch device for ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"auto"``.

    ``"auto"`` is CUDA where a CUDA device is available and the CPU otherwise.

    Raises
    ------
    ConfigError
        An unknown device name, or ``"cuda"`` without a CUDA device.

    Examples
    --------
    >>> from medveil.machine import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    return torch.device(device)


def load_cuda_linalg(device: torch.device) -> None:
    """Load torch's CUDA linear-algebra library now, in this thread, when ``device`` is CUDA.

    torch loads it on the first CUDA ``torch.linalg`` call, and that loading is not thread-safe:
    two worker threads making their first call at once fail with "lazy wrapper should be called
    at most once" (seen on an H200 with torch 2.11, obfuscating with the local engine's
    threads). One call before the threads start loads it for every operator. Nothing happens on
    the CPU.

    Examples
    --------
    >>> import torch
    >>> from medveil.machine import load_cuda_linalg
    >>> load_cuda_linalg(torch.device("cpu"))
    """
    if device.type == "cuda":
        torch.linalg.cholesky_ex(torch.eye(1, device=device))
