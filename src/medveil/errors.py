"""Exceptions raised by medveil; each message names the file or field and the problem.

Every library error derives from :class:`MedveilError`, so a caller (the command line, say)
can catch them all with one ``except``. The families:

- :class:`LoadError`: an input cannot be read (:class:`ImageLoadError` for one file,
  :class:`DatasetLayoutError` for a folder);
- :class:`InvalidKeyError`: a key file or key parameters (:class:`KeyParameterError` for one
  parameter, which is also a :class:`ConfigError`);
- :class:`StoreError`: an obfuscated store (:class:`medveil.store.StoreBusyError` and
  :class:`medveil.store.StoreWriteError` refine it);
- :class:`ConfigError`: a parameter or configuration value; ``field`` names it, so that a
  caller that nests parameters (the study's ``training.epochs``) can name it in full;
- :class:`RunError`: a training run folder;
- :class:`StudyError`: a study's run or keys folder.

:class:`MedveilWarning` is for what a person should know while the run goes on (the command
line prints it as ``warning: MESSAGE``).

Each also derives from :class:`ValueError`, as the errors it replaced did, so code that
catches ``ValueError`` keeps working.

Examples
--------
>>> from medveil.errors import ConfigError, ImageLoadError, LoadError, MedveilError
>>> error = ImageLoadError("scan.png", "not an image")
>>> str(error), isinstance(error, LoadError), isinstance(error, MedveilError)
('scan.png: not an image', True, True)
>>> error = ConfigError("must be at least 1, got 0", field="epochs")
>>> str(error), error.field, error.problem
('epochs: must be at least 1, got 0', 'epochs', 'must be at least 1, got 0')
"""

from __future__ import annotations

__all__ = [
    "MedveilWarning",
    "ConfigError",
    "DatasetLayoutError",
    "ImageLoadError",
    "InvalidKeyError",
    "KeyParameterError",
    "LoadError",
    "MedveilError",
    "RunError",
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
    """A parameter or configuration value is missing, unknown or out of range; names it.

    Parameters
    ----------
    problem : str
        What is wrong, e.g. ``must be at least 1, got 0``.
    field : str, optional
        The parameter at fault; the message then reads ``field: problem``.
    """

    def __init__(self, problem: str, *, field: str | None = None) -> None:
        self.field = field
        self.problem = problem
        super().__init__(problem if field is None else f"{field}: {problem}")


class KeyParameterError(InvalidKeyError, ConfigError):
    """One parameter of the obfuscation scheme (:class:`medveil.keys.SchemeParams`) is invalid."""


class RunError(MedveilError, ValueError):
    """A training run folder cannot be used: not empty, not a run, nothing to resume, resumed
    with other settings or data, or evaluated on data it was not trained for."""


class StudyError(MedveilError, ValueError):
    """The run folder or the keys folder cannot be used for this study."""


class MedveilWarning(UserWarning):
    """Something a person should know while the run goes on (e.g. credentials sent unencrypted)."""
