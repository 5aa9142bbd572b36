"""Exceptions raised by medveil; each message names the file or field and the problem.

Every library error derives from :class:`MedveilError`, so a caller (the command line, say)
can catch them all with one ``except``. The families:

- :class:`LoadError`: an input cannot be read (:class:`ImageLoadError` for one file,
  :class:`DatasetLayoutError` for a folder);
- :class:`InvalidKeyError`: a key file or key parameters;
- :class:`StoreError`: an obfuscated store (:class:`medveil.store.StoreBusyError` and
  :class:`medveil.store.StoreWriteError` refine it);
- :class:`ConfigError`: a parameter or configuration value;
- :class:`StudyError`: a study's run or keys folder.

Each also derives from :class:`ValueError`, as the errors it replaced did, so code that
catches ``ValueError`` keeps working.

Examples
--------
>>> from medveil.errors import ImageLoadError, LoadError, MedveilError
>>> error = ImageLoadError("scan.png", "not an image")
>>> str(error), isinstance(error, LoadError), isinstance(error, MedveilError)
('scan.png: not an image', True, True)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatasetLayoutError",
    "ImageLoadError",
    "InvalidKeyError",
    "LoadError",
    "MedveilError",
    "StoreError",
    "StudyError",
]


class MedveilError(Exception):
    """Base class of medveil's errors."""


class LoadError(MedveilError, ValueError):
    """An input (an image file or a dataset folder) cannot be read as medveil needs it."""


class ImageLoadError(LoadError):
    """An input file cannot be turned into a valid image."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class DatasetLayoutError(LoadError):
    """A dataset folder is empty or not in a layout medveil understands."""


class InvalidKeyError(MedveilError, ValueError):
    """A key file or key parameters are invalid."""


class StoreError(MedveilError, ValueError):
    """An obfuscated dataset store is missing, incomplete or inconsistent."""


class ConfigError(MedveilError, ValueError):
    """A parameter or configuration value is missing, unknown or out of range; names it."""


class StudyError(MedveilError, ValueError):
    """The run folder or the keys folder cannot be used for this study."""
