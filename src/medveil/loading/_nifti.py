"""Decoding NIfTI with nibabel: a volume (or the volumes of a 4-D series) reoriented to
closest-canonical RAS+ and sliced along ``nifti_axis``."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, io_orientation

from medveil.errors import ImageLoadError
from medveil.loading._checks import check_claimed_bytes, decoder_reason
from medveil.loading._options import LoadOptions

__all__ = ["NIFTI_SUFFIXES", "read_nifti"]

NIFTI_SUFFIXES = frozenset({".nii", ".nii.gz"})

# Third-party decoders signal bad files through many exception types; these are the ones that mean
# "this file cannot be decoded" (and not a bug of ours), so they become ImageLoadError.
_NIFTI_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error)


def read_nifti(path: Path, options: LoadOptions) -> list[np.ndarray]:
    try:
        image = nib.load(path)  # reads the header only; the voxels stay on disk
        _check_nifti_bytes(path, image, options.max_bytes)
        volumes = _nifti_volumes(path, image, options.nifti_volume)
    except ImageLoadError:
        raise
    except ImageFileError as exc:
        raise ImageLoadError(path, "not a NIfTI file (no valid NIfTI-1 or NIfTI-2 header)") from exc
    except _NIFTI_ERRORS as exc:
        raise ImageLoadError(path, f"cannot read as NIfTI ({decoder_reason(exc)})") from exc
    slices: list[np.ndarray] = []
    for volume in volumes:
        slices.extend(_nifti_slices(image, volume, options.nifti_axis))
    return slices


def _nifti_volumes(
    path: Path, image: nib.filebasedimages.FileBasedImage, which: int | str | None
) -> list[np.ndarray]:
    """The 3-D (or 2-D) volumes to slice: the file's one, or those ``which`` picks of a 4-D."""
    shape = tuple(int(d) for d in image.shape)
    count = shape[3] if len(shape) == 4 else 1
    if len(shape) > 4 or (len(shape) == 4 and count > 1 and which is None):
        what = f"{len(shape)}-D NIfTI data of shape {'x'.join(str(d) for d in shape)}"
        if len(shape) > 4:
            raise ImageLoadError(path, f"{what} is not a 2D image, a 3D volume or a 4-D series")
        raise ImageLoadError(
            path,
            f"{what} holds {count} volumes (fMRI or a time series); choose one with "
            f"--nifti-volume INDEX (0 to {count - 1}), or take the slices of every volume with "
            "--nifti-volume all",
        )
    if len(shape) < 4:
        return [np.asanyarray(image.dataobj)]  # applies scl_slope / scl_inter
    if which == "all":
        data = np.asanyarray(image.dataobj)
        return [data[..., t] for t in range(count)]
    index = 0 if which is None else int(which)
    if index >= count:
        raise ImageLoadError(
            path,
            f"--nifti-volume {index} is out of range: the file holds {count} volume(s), "
            f"0 to {count - 1}",
        )
    # Only the chosen volume is read from disk.
    return [np.asanyarray(image.dataobj[..., index])]


def _nifti_slices(
    image: nib.filebasedimages.FileBasedImage, volume: np.ndarray, axis: int
) -> list[np.ndarray]:
    if volume.ndim == 3 and 1 in volume.shape:
        volume = volume.squeeze()  # a single slice stored as a volume
    if volume.ndim == 2:
        return [volume]
    # Reorient to closest-canonical RAS+ so that nifti_axis means the same anatomical axis
    # whatever the storage order of the file.
    volume = apply_orientation(volume, io_orientation(image.affine))
    return [np.take(volume, i, axis=axis) for i in range(volume.shape[axis])]


def _check_nifti_bytes(path: Path, image: nib.filebasedimages.FileBasedImage, limit: int) -> None:
    shape = tuple(int(d) for d in image.shape)
    dtype = np.dtype(image.get_data_dtype())
    slope, inter = getattr(image.dataobj, "slope", 1.0), getattr(image.dataobj, "inter", 0.0)
    # Scaled data comes back as float64, whatever the stored type.
    itemsize = 8 if (slope, inter) != (1.0, 0.0) else dtype.itemsize
    claimed = math.prod(shape) * itemsize
    what = f"{'x'.join(str(d) for d in shape)} voxels of {itemsize} bytes"
    check_claimed_bytes(path, claimed, what, limit)
