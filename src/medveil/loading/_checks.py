"""Step 2 of loading, the checks every decoded slice goes through, and what the decoders share:
the size a header claims checked before decoding, colour to luminance, a decoder error's reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medveil.errors import ImageLoadError

__all__ = [
    "check_claimed_bytes",
    "check_size",
    "check_values",
    "decoder_reason",
    "luminance",
]

_BT601 = np.array([0.299, 0.587, 0.114])


def check_values(
    path: Path, image: np.ndarray, fill: float | None
) -> tuple[np.ndarray, bool]:
    """The image with non-finite values filled (when asked), and whether any were."""
    if image.dtype.kind not in "biuf":
        raise ImageLoadError(path, f"unsupported pixel type {image.dtype}")
    if image.dtype.kind != "f":
        return image, False
    finite = np.isfinite(image)
    if finite.all():
        return image, False
    if fill is None:
        bad = int(finite.size - np.count_nonzero(finite))
        raise ImageLoadError(
            path,
            f"contains NaN or infinite values ({bad:,} of {finite.size:,} pixels of a slice); "
            "--fill-nonfinite VALUE replaces them (e.g. 0 for the outside of a resampled "
            "volume's field of view)",
        )
    return np.where(finite, image, fill), True


def check_size(path: Path, shape: tuple[int, ...], min_size: int | None) -> None:
    if len(shape) != 2:
        raise ImageLoadError(path, f"expected a 2D image, got an array of shape {shape}")
    height, width = shape
    if min_size is not None and (height < min_size or width < min_size):
        raise ImageLoadError(
            path,
            f"image is {width}x{height} pixels, smaller than the minimum size "
            f"{min_size}x{min_size} (--min-size)",
        )


def check_claimed_bytes(path: Path, claimed: int, what: str, limit: int) -> None:
    """Refuse, before decoding, a file whose header claims more pixel data than ``limit``."""
    if claimed > limit:
        raise ImageLoadError(
            path,
            f"its header claims {what} = {_megabytes(claimed)} of pixel data, over the limit of "
            f"{_megabytes(limit)} (a corrupt or hostile file, or a very large image; raise the "
            "limit with --max-image-mb if the file is genuine)",
        )


def _megabytes(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of the first three channels (alpha, if any, is ignored)."""
    return rgb[..., :3] @ _BT601


def decoder_reason(exc: BaseException) -> str:
    """The cause of a decoder's error without the file's path (the message names it already)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
