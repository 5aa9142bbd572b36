"""Steps 2 to 4 of loading on a file's decoded slices: check them, drop constant ones, resize and
normalise each, and count the upscaled and filled ones (:class:`LoadedFile`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from medveil.errors import ImageLoadError
from medveil.loading._checks import check_size, check_values
from medveil.loading._options import LoadOptions

__all__ = ["LoadedFile", "checked_file"]


@dataclass(frozen=True)
class LoadedFile:
    """The slices of one file, how many were upscaled or filled, and its patient.

    Attributes
    ----------
    slices : list of numpy.ndarray
        As returned by :func:`medveil.loading.load_slices`.
    upscaled : int
        How many of ``slices`` came from an image smaller than the working size on at least one
        side (and were therefore enlarged, in that direction, by the resize).
    filled : int
        How many of ``slices`` held NaN or infinite values that ``fill_nonfinite`` replaced.
    patient : str or None
        The DICOM PatientID (stripped; ``None`` when absent or empty, and for other formats).
        Identifying: callers must hash it before storing it.
    """

    slices: list[np.ndarray]
    upscaled: int
    filled: int = 0
    patient: str | None = field(default=None, repr=False)


def checked_file(
    path: Path, slices: list[np.ndarray], patient: str | None, options: LoadOptions
) -> LoadedFile:
    """The checks, resize and normalisation of :func:`medveil.loading.load_file` on decoded
    slices."""
    filled = [False] * len(slices)
    for i, image in enumerate(slices):
        slices[i], filled[i] = check_values(path, image, options.fill_nonfinite)
        check_size(path, image.shape, options.min_size)
    kept = [i for i, image in enumerate(slices) if not _is_constant(image)]
    varying = [slices[i] for i in kept]
    if not varying:
        what = "the image is" if len(slices) == 1 else f"all {len(slices)} slices are"
        raise ImageLoadError(path, f"{what} constant (a single value), so it cannot be normalised")
    n = options.size
    # A JPEG may have been decoded at 1/2, 1/4 or 1/8 scale, never below n, so its decoded
    # shape says as much as the stored one about upscaling.
    upscaled = sum(1 for image in varying if min(image.shape) < n)
    return LoadedFile(
        slices=[_resize_normalise(path, image, options) for image in varying],
        upscaled=upscaled,
        filled=sum(filled[i] for i in kept),
        patient=patient,
    )


def _is_constant(image: np.ndarray) -> bool:
    return bool(image.min() == image.max())


def _resize_normalise(path: Path, image: np.ndarray, options: LoadOptions) -> np.ndarray:
    # Scale to [0, 1] in float64 first: float32 (which Pillow resizes) then keeps full precision
    # even for 32-bit or offset data (e.g. values near 1e6 that differ by 1).
    lo, hi = float(image.min()), float(image.max())
    unit = ((image - lo) / (hi - lo)).astype(np.float32)
    n = options.size
    if unit.shape != (n, n):
        # Pillow widens the bilinear kernel when downscaling, so shrinking is antialiased;
        # enlarging (an image smaller than n) is plain bilinear interpolation.
        unit = np.asarray(Image.fromarray(unit).resize((n, n), Image.Resampling.BILINEAR))
    elif options.percentile is None:
        return unit  # already spans exactly [0, 1]: normalising again would change nothing
    return _normalise(path, unit, options.percentile)


def _normalise(path: Path, image: np.ndarray, percentile: tuple[float, float] | None) -> np.ndarray:
    if percentile is None:
        lo, hi = image.min(), image.max()
    else:
        lo, hi = np.percentile(image, percentile).astype(np.float32)
        image = np.clip(image, lo, hi)
    if not hi > lo:
        raise ImageLoadError(
            path, f"image is constant between its {percentile} percentiles; widen the percentiles"
        )
    return ((image - lo) / (hi - lo)).astype(np.float32)
