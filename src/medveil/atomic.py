"""Atomic file writes: a temporary file in the same folder, flushed, then renamed into place.

A reader (or a rerun after Ctrl-C or a kill) sees either the old file or the whole new one,
never a half-written file.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], *, mode: int = 0o644) -> None:
    """Create ``path`` through ``write(handle)`` on a temporary file with permissions ``mode``.

    The temporary file is created with ``mode`` from the start (``O_EXCL``), so a secret written
    with ``mode=0o600`` is never readable by others, not even for a moment.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    atomic_write(path, lambda handle: handle.write(data), mode=mode)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))
