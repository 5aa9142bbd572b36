"""Atomic, durable file writes: a temporary file in the same folder, flushed, then renamed.

A reader (or a rerun after Ctrl-C, a kill or a power cut) sees either the old file or the whole
new one, never a half-written file: the data is fsynced before the rename and the folder after
it, so the rename itself survives a crash.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "atomic_save_npy",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_folder",
    "remove_stale_temporaries",
]

# Errors with which a file system says it has no hard links (FAT, some network mounts).
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename or unlink in it) to disk."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries that an interrupted :func:`atomic_write` of ``path`` left behind.

    A process killed between creating its temporary and renaming it leaves
    ``.<name>.<8 hex digits>.tmp`` beside ``path``; for a key file that temporary holds the
    secret. Returns the paths removed.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    removed = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            if pattern.fullmatch(candidate.name) and not candidate.is_symlink():
                candidate.unlink(missing_ok=True)
                removed.append(candidate)
    if removed:
        fsync_folder(path.parent)
    return removed


def _publish_exclusive(tmp: Path, path: Path) -> None:
    # link() fails if anything (even a dangling symlink) already has the name, so a file that
    # appeared after the caller's checks is never replaced; rename() would replace it silently.
    try:
        os.link(tmp, path)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # No hard links here: the best remaining is a check just before the rename.
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.rename(tmp, path)
        return
    tmp.unlink()


def atomic_write(
    path: Path,
    write: Callable[[IO[bytes]], None],
    *,
    mode: int = 0o644,
    exclusive: bool = False,
) -> None:
    """Create ``path`` through ``write(handle)`` on a temporary file with permissions ``mode``.

    The temporary file is created with ``mode`` from the start (``O_EXCL``), so a secret written
    with ``mode=0o600`` is never readable by others, not even for a moment. The file and then
    its folder are fsynced, so after a crash the new file is either whole or absent.

    Parameters
    ----------
    path
        Final name.
    write
        Writes the content into the open binary handle.
    mode
        Permission bits of the new file.
    exclusive
        Never replace anything at ``path``: raise :class:`FileExistsError` if something has the
        name when the file is published (published with a hard link, which checks and creates in
        one step).
    """
    tmp = _temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            _publish_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write_bytes(
    path: Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False
) -> None:
    atomic_write(path, lambda handle: handle.write(data), mode=mode, exclusive=exclusive)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))
