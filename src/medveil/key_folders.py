"""Where a key file may live: an owner-only folder, never inside a medveil output folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from medveil.errors import InvalidKeyError
from medveil.outputs import MARKER

__all__ = ["ensure_key_folder", "ensure_not_in_output"]


# Write bits for group and others; a folder with them is safe only when sticky (like /tmp).
_SHARED_WRITE = stat.S_IWGRP | stat.S_IWOTH


def ensure_key_folder(folder: Path) -> None:
    """Create ``folder`` for a key file, each missing level owner-only (0700), and check it.

    Raises
    ------
    InvalidKeyError
        ``folder`` or one of its parents may be written by group or others and is not sticky:
        whoever can write there could replace the key (or a folder on its path) with one they
        know, and the data would be obfuscated under it.
    """
    folder = Path(folder).expanduser().resolve()
    levels = (folder, *folder.parents)
    # Check what exists before creating anything, so a refusal leaves no folder behind.
    for level in levels:
        if not level.exists():
            continue
        mode = level.stat().st_mode
        if mode & _SHARED_WRITE and not mode & stat.S_ISVTX:
            raise InvalidKeyError(
                f"{level}: refusing to keep a key under this folder: group or others can write "
                f"to it (mode {stat.S_IMODE(mode):04o}) and it is not sticky, so someone else "
                f"could swap in a key they know. Use another folder, or run: chmod go-w {level}"
            )
    for level in reversed([p for p in levels if not p.exists()]):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:
            continue
        # mkdir applies the umask; a key's folder is owner-only whatever the umask.
        os.chmod(level, 0o700)


def ensure_not_in_output(key_path: Path, output_dir: Path | None = None) -> None:
    """Refuse a key path inside ``output_dir`` or inside any medveil output folder.

    Every folder medveil writes (stores, studies, training, evaluation, attack and sweep runs)
    carries the marker :data:`medveil.outputs.MARKER`; a key is refused under any of them.
    """
    key_path = key_path.expanduser().resolve()
    if output_dir is not None:
        out = output_dir.expanduser().resolve()
        if key_path == out or out in key_path.parents:
            raise InvalidKeyError(
                f"{key_path}: refusing to keep a key inside the output folder {out}; "
                "store keys apart from the data they protect"
            )
    for parent in key_path.parents:
        if (parent / MARKER).is_file():
            raise InvalidKeyError(
                f"{key_path}: refusing to write a key inside the medveil output folder {parent}"
            )

