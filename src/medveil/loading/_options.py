"""How files become slices: :class:`LoadOptions`, checked when made."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_OPTIONS", "LoadOptions"]

_MIN_SIZE = 2
#: Default ceiling on the decoded size of one file (all its frames or slices): 1 GiB. Pillow
#: refuses images over 2 x 89,478,485 pixels, about 0.7 GB at 4 bytes a pixel; volumes (CT,
#: MRI) of 512 x 512 x 1000 16-bit voxels (0.5 GB) stay under it.
DEFAULT_MAX_BYTES = 1 << 30


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """How files become slices.

    Parameters
    ----------
    size : int
        Working size n: every slice is resized to ``n x n`` (at least 2); images smaller than n
        on a side are upscaled.
    min_size : int or None
        Refuse images smaller than this many pixels on either side (``None``, the default:
        accept any size and upscale).
    max_bytes : int
        Refuse a file whose header claims more decoded pixel data than this, all frames or
        slices together (default :data:`DEFAULT_MAX_BYTES`, 1 GiB); checked before decoding.
    percentile : tuple of float or None
        ``(lo, hi)`` with ``0 <= lo < hi <= 100``: clip each image at these percentiles of its own
        values before the min-max normalisation (robust to outliers, e.g. hot pixels in 16-bit
        data). ``None`` (default): plain min-max.
    nifti_axis : int
        Axis (0, 1 or 2) of a NIfTI volume, in closest-canonical RAS+ voxel order, along which it
        is sliced; 2 (default) gives axial slices.
    nifti_volume : int, "all" or None
        Which volume of a 4-D NIfTI (fMRI, a time series) to slice: its index along the 4th
        axis, or ``"all"`` for the slices of every volume, volume by volume. ``None`` (default):
        a 4th axis longer than 1 is refused, with a message naming this option.
    fill_nonfinite : float or None
        Replace NaN and infinite values by this number before the checks (e.g. 0 for the NaN
        outside the field of view of a resampled volume); ``None`` (default): refuse them.
    """

    size: int = 224
    percentile: tuple[float, float] | None = None
    nifti_axis: int = 2
    min_size: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    nifti_volume: int | str | None = None
    fill_nonfinite: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise TypeError(f"size must be an int, got {self.size!r}")
        if self.size < _MIN_SIZE:
            raise ValueError(f"size must be at least {_MIN_SIZE}, got {self.size}")
        if self.min_size is not None and (
            isinstance(self.min_size, bool) or not isinstance(self.min_size, int)
            or self.min_size < 1
        ):
            raise ValueError(f"min_size must be a positive int or None, got {self.min_size!r}")
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or (
            self.max_bytes < 1
        ):
            raise ValueError(f"max_bytes must be a positive int, got {self.max_bytes!r}")
        if self.nifti_axis not in (0, 1, 2) or isinstance(self.nifti_axis, bool):
            raise ValueError(f"nifti_axis must be 0, 1 or 2, got {self.nifti_axis!r}")
        if self.percentile is not None:
            object.__setattr__(self, "percentile", _checked_percentile(self.percentile))
        volume = self.nifti_volume
        if volume is not None and volume != "all" and (
            isinstance(volume, bool) or not isinstance(volume, int) or volume < 0
        ):
            raise ValueError(
                f"nifti_volume must be a volume index (0, 1, ...), 'all' or None, got {volume!r}"
            )
        if self.fill_nonfinite is not None:
            fill = self.fill_nonfinite
            if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(
                fill
            ):
                raise ValueError(f"fill_nonfinite must be a finite number or None, got {fill!r}")
            object.__setattr__(self, "fill_nonfinite", float(fill))


def _checked_percentile(value: object) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(f"percentile must be a pair (lo, hi) of numbers, got {value!r}") from None
    if not 0.0 <= lo < hi <= 100.0:
        raise ValueError(f"percentile must satisfy 0 <= lo < hi <= 100, got {value!r}")
    return lo, hi


DEFAULT_OPTIONS = LoadOptions()
