"""Exceptions raised by medveil; each message names the file or field and the problem."""

from __future__ import annotations


class MedveilError(Exception):
    """Base class of medveil's errors."""


class InvalidKeyError(MedveilError, ValueError):
    """A key file or key parameters are invalid."""


class ImageLoadError(MedveilError, ValueError):
    """An input file cannot be turned into a valid image."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class DatasetLayoutError(MedveilError, ValueError):
    """A dataset folder is empty or not in a layout medveil understands."""


class StoreError(MedveilError, ValueError):
    """An obfuscated dataset store is missing, incomplete or inconsistent."""


class StudyError(MedveilError, ValueError):
    """The run folder or the keys folder cannot be used for this study."""
