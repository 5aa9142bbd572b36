"""Decoding PNG, JPEG, TIFF and BMP files with Pillow, at full depth (16-bit PNG and TIFF kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from medveil.errors import ImageLoadError
from medveil.loading._checks import check_claimed_bytes, check_size, decoder_reason, luminance
from medveil.loading._options import LoadOptions

__all__ = ["PILLOW_SUFFIXES", "read_pillow"]

PILLOW_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

# Third-party decoders signal bad files through many exception types; these are the ones that mean
# "this file cannot be decoded" (and not a bug of ours), so they become ImageLoadError.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def read_pillow(path: Path, options: LoadOptions) -> list[np.ndarray]:
    # A truncated file must fail rather than come back grey-padded; Pillow only pads when this
    # global flag is set, so refuse to run under it instead of silently changing it for others.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; medveil needs it False")
    try:
        with Image.open(path) as im:
            frames = range(im.n_frames) if im.format == "TIFF" else range(1)
            _check_pillow_bytes(path, im, frames, options.max_bytes)
            if im.format == "JPEG":
                return [_jpeg_array(path, im, options)]
            return [_pillow_frame(im, i) for i in frames]
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(
            path,
            f"refused by Pillow's decompression-bomb check: {str(exc).rstrip('.')} (a hostile "
            "or corrupt file, or an image too large to load; Pillow's limit is "
            "PIL.Image.MAX_IMAGE_PIXELS)",
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            path, "not an image (its content is not PNG, JPEG, TIFF or BMP, whatever its name)"
        ) from exc
    except _PILLOW_ERRORS as exc:
        raise ImageLoadError(path, f"cannot read the image ({decoder_reason(exc)})") from exc


def _pillow_bytes_per_pixel(mode: str) -> int:
    if mode in ("I", "F") or mode.startswith("I;32"):
        return 4
    if mode.startswith("I;16"):
        return 2
    return Image.getmodebands(mode)


def _check_pillow_bytes(path: Path, im: Image.Image, frames: range, limit: int) -> None:
    # Pages of a TIFF may differ in size and mode; seeking reads only their headers.
    total, sizes = 0, set()
    for i in frames:
        im.seek(i)
        sizes.add(f"{im.width}x{im.height}")
        total += im.width * im.height * _pillow_bytes_per_pixel(im.mode)
    im.seek(0)
    what = (
        f"{len(frames)} frames of {'/'.join(sorted(sizes))} pixels" if len(frames) > 1
        else f"{im.width}x{im.height} pixels ({im.mode})"
    )
    check_claimed_bytes(path, total, what, limit)


def _jpeg_array(path: Path, im: Image.Image, options: LoadOptions) -> np.ndarray:
    # The size check must see the stored size: draft() below shrinks the image.
    check_size(path, (im.height, im.width), options.min_size)
    # DCT-domain downscale by 1/2, 1/4 or 1/8 while staying >= size (much faster to decode); for
    # YCbCr JPEGs requesting 'L' returns the Y channel, which is the BT.601 luma of the RGB.
    im.draft("L", (options.size, options.size))
    return _pillow_frame(im, 0)


def _pillow_frame(im: Image.Image, index: int) -> np.ndarray:
    im.seek(index)
    im.load()  # full decode now, so truncation raises here
    mode = im.mode
    if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
        return np.asarray(im)
    if mode == "LA":
        return np.asarray(im)[..., 0]
    if mode not in ("RGB", "RGBA", "RGBX"):  # palette, CMYK, YCbCr, ...
        im = im.convert("RGB")
    return luminance(np.asarray(im))
