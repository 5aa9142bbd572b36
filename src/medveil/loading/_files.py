"""The entry points: a file checked (exists, regular, readable, not empty), handed to its
format's decoder, and its slices through the common steps."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from medveil.errors import ImageLoadError
from medveil.loading._dicom import DICOM_SUFFIXES, dicom_slices, read_dicom
from medveil.loading._nifti import NIFTI_SUFFIXES, read_nifti
from medveil.loading._options import DEFAULT_OPTIONS, LoadOptions
from medveil.loading._pillow import PILLOW_SUFFIXES, read_pillow
from medveil.loading._steps import LoadedFile, checked_file

__all__ = [
    "SUPPORTED_SUFFIXES",
    "is_supported",
    "load_dicom_dataset",
    "load_file",
    "load_image",
    "load_slices",
]

SUPPORTED_SUFFIXES: frozenset[str] = PILLOW_SUFFIXES | DICOM_SUFFIXES | NIFTI_SUFFIXES


def is_supported(path: str | os.PathLike[str]) -> bool:
    """Whether the file's suffix (case-insensitive, ``.nii.gz`` included) is a supported format.

    :func:`load_slices` also accepts DICOM files without a ``.dcm`` suffix when they carry the
    ``DICM`` preamble; this suffix test does not open the file, so it says ``False`` for those.
    """
    return _suffix(Path(path)) in SUPPORTED_SUFFIXES


def load_file(
    path: str | os.PathLike[str], *, options: LoadOptions = DEFAULT_OPTIONS
) -> LoadedFile:
    """Like :func:`load_slices`, and also say how many slices were upscaled."""
    path = Path(path)
    _check_file(path)
    slices, patient = _decode(path, options)
    return checked_file(path, slices, patient, options)


def load_dicom_dataset(
    dataset: pydicom.Dataset, *, name: str, options: LoadOptions = DEFAULT_OPTIONS
) -> LoadedFile:
    """Like :func:`load_file` for a DICOM dataset already in memory (e.g. retrieved over
    DICOMweb): the same checks, decoders and steps, with ``name`` in the error messages."""
    slices, patient = dicom_slices(Path(name), dataset, options)
    return checked_file(Path(name), slices, patient, options)


def load_slices(
    path: str | os.PathLike[str], *, options: LoadOptions = DEFAULT_OPTIONS
) -> list[np.ndarray]:
    """Load every image slice a file holds, resized and normalised.

    Parameters
    ----------
    path : str or os.PathLike
        A PNG, JPEG, TIFF, BMP, DICOM (``.dcm`` or any name with the ``DICM`` preamble) or NIfTI
        (``.nii``, ``.nii.gz``) file.
    options : LoadOptions
        Working size, minimum size, size limit, percentile clipping and NIfTI slicing axis.

    Returns
    -------
    list of numpy.ndarray
        float32 arrays of shape ``(n, n)`` with values in [0, 1], minimum 0 and maximum 1. One for
        a 2D image; one per non-constant slice for a NIfTI volume, a multi-frame DICOM or a
        multi-page TIFF (constant slices, e.g. blank slices at a volume's edges, are skipped).
        Colour is converted to luminance ``Y = 0.299 R + 0.587 G + 0.114 B``; the image is resized
        (bilinear, antialiased when shrinking, aspect ratio not preserved; smaller images are
        upscaled) and then normalised per image, ``x' = (clip(x, lo, hi) - lo) / (hi - lo)``,
        with ``lo, hi`` its minimum and maximum or its ``options.percentile`` percentiles.

    Raises
    ------
    ImageLoadError
        The file is missing, empty, a folder, a broken symbolic link or a link loop, not a
        supported image, corrupt or truncated, undecodable (e.g. compressed DICOM without the
        needed plugin), claims more than ``options.max_bytes`` of pixel data, holds NaN/inf
        values, is smaller than ``options.min_size`` on a side, or has no non-constant slice.
    """
    return load_file(path, options=options).slices


def load_image(
    path: str | os.PathLike[str], *, options: LoadOptions = DEFAULT_OPTIONS
) -> np.ndarray:
    """Load a file that holds exactly one image slice; see :func:`load_slices` for the steps.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(n, n)`` with values in [0, 1].

    Raises
    ------
    ImageLoadError
        As :func:`load_slices`, and when the file holds more than one non-constant slice.
    """
    slices = load_slices(path, options=options)
    if len(slices) != 1:
        raise ImageLoadError(
            path, f"holds {len(slices)} slices, expected one; use load_slices for volumes"
        )
    return slices[0]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _check_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageLoadError(
                path, f"broken symbolic link (its target {os.readlink(path)} does not exist)"
            ) from None
        raise ImageLoadError(path, "file not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageLoadError(
                path, "symbolic link loop (following the link leads back to itself)"
            ) from None
        raise ImageLoadError(path, f"cannot open the file ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        if path.is_symlink():
            raise ImageLoadError(
                path, "symbolic link to a folder; linked folders are not followed (they can loop)"
            )
        raise ImageLoadError(path, "is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageLoadError(path, "not a regular file (a device, pipe or socket)")
    if info.st_size == 0:
        raise ImageLoadError(path, "file is empty")
    if not os.access(path, os.R_OK):
        raise ImageLoadError(path, "permission denied (the file is not readable by this user)")


def _has_dicom_preamble(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(132)[128:] == b"DICM"


def _decode(path: Path, options: LoadOptions) -> tuple[list[np.ndarray], str | None]:
    """The file's slices before any check, and its patient (DICOM only)."""
    suffix = _suffix(path)
    reader: Callable[[Path, LoadOptions], list[np.ndarray]]
    if suffix in PILLOW_SUFFIXES:
        reader = read_pillow
    elif suffix in NIFTI_SUFFIXES:
        reader = read_nifti
    elif suffix in DICOM_SUFFIXES or _has_dicom_preamble(path):
        return read_dicom(path, options)
    else:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise ImageLoadError(
            path, f"unsupported file type {suffix or '(no suffix)'!r}; supported: {supported}"
        )
    return reader(path, options), None
