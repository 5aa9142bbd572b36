"""The marker that every folder medveil writes carries, and what kind of output it names.

The marker file (:data:`MARKER`) does two jobs: keys are refused anywhere under a folder that
carries it (:func:`medveil.keys.ensure_not_in_output`), and a command that is about to write into
an existing folder can tell its own kind of output from another one (a store must never clear a
study's files). Its content is one line, ``medveil <kind>``; markers written before kinds existed
are empty and read as :data:`UNKNOWN`.
"""

from __future__ import annotations

from pathlib import Path

from medveil.atomic import atomic_write_bytes
from medveil.errors import ConfigError

__all__ = ["KINDS", "MARKER", "UNKNOWN", "mark_output", "output_kind"]

MARKER = ".medveil-output"
KINDS = ("store", "study", "training-run", "attack-run", "rank-sweep", "evaluation")
UNKNOWN = "unknown"


def mark_output(folder: Path, *, kind: str) -> None:
    """Write the marker naming ``kind`` into ``folder`` (which must exist).

    Raises
    ------
    ConfigError
        ``kind`` is not one of :data:`KINDS`.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown output kind {kind!r}; choose one of {', '.join(KINDS)}")
    atomic_write_bytes(Path(folder) / MARKER, f"medveil {kind}\n".encode())


def output_kind(folder: Path) -> str | None:
    """The kind of medveil output ``folder`` holds, :data:`UNKNOWN` for an old or unreadable
    marker, or ``None`` when it carries no marker.
    """
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        words = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return UNKNOWN
    if len(words) == 2 and words[0] == "medveil" and words[1] in KINDS:
        return words[1]
    return UNKNOWN
