"""Load medical images of every supported format as normalised grayscale slices.

One entry point for PNG, JPEG, TIFF, BMP (Pillow), DICOM (pydicom) and NIfTI (nibabel). Every
slice goes through the same steps:

1. decode at full depth (16-bit PNG/TIFF, DICOM and NIfTI values are never squeezed into 8 bits);
   DICOM through its modality LUT (rescale slope/intercept) and VOI LUT / window, MONOCHROME1
   inverted; colour converted to luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601);
2. check: finite values (NaN and infinities are refused, or replaced by ``fill_nonfinite``
   when that option is set), not constant, and (only when ``min_size`` is set) at least
   ``min_size`` pixels on each side;
3. bilinear resize straight to ``size x size``, antialiased when shrinking and interpolating when
   enlarging (an image smaller than ``size`` is upscaled, as torchvision, MONAI and scikit-image
   do) -- the aspect ratio is *not* kept, a non-square image is stretched;
4. per-image normalisation to [0, 1]: ``x' = (clip(x, lo, hi) - lo) / (hi - lo)`` with ``lo, hi``
   the image's minimum and maximum, or its ``percentile`` values when that option is set.

Before anything is decoded, the size the file's header claims (width x height x frames x bytes
per pixel) is checked against ``max_bytes``, so a small file cannot make medveil allocate
gigabytes (Pillow's decompression-bomb check is the model; Pillow's own limit applies to its
formats as well).

A 4-D NIfTI (fMRI, a time series) is refused unless ``nifti_volume`` picks one volume or asks
for ``"all"`` of them. A DICOM's PatientID, when it has one, is returned with its slices
(:attr:`LoadedFile.patient`) so that a caller can keep a patient's images together; it is never
printed.

Bad input of any kind raises :class:`medveil.errors.ImageLoadError` naming the file and the problem:
broken symbolic links, link loops, folders and special files included.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, io_orientation
from PIL import Image, ImageFile, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

from medveil.errors import ImageLoadError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_OPTIONS",
    "SUPPORTED_SUFFIXES",
    "LoadOptions",
    "LoadedFile",
    "is_supported",
    "load_dicom_dataset",
    "load_file",
    "load_image",
    "load_slices",
]

_PILLOW_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
_DICOM_SUFFIXES = frozenset({".dcm"})
_NIFTI_SUFFIXES = frozenset({".nii", ".nii.gz"})
SUPPORTED_SUFFIXES: frozenset[str] = _PILLOW_SUFFIXES | _DICOM_SUFFIXES | _NIFTI_SUFFIXES

_BT601 = np.array([0.299, 0.587, 0.114])
_MIN_SIZE = 2
#: Default ceiling on the decoded size of one file (all its frames or slices): 1 GiB. Pillow
#: refuses images over 2 x 89,478,485 pixels, about 0.7 GB at 4 bytes a pixel; volumes (CT,
#: MRI) of 512 x 512 x 1000 16-bit voxels (0.5 GB) stay under it.
DEFAULT_MAX_BYTES = 1 << 30

# Third-party decoders signal bad files through many exception types; these are the ones that mean
# "this file cannot be decoded" (and not a bug of ours), so they become ImageLoadError.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_DICOM_ERRORS = (
    InvalidDicomError,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    AttributeError,
    TypeError,
    NotImplementedError,
    RuntimeError,
)
_NIFTI_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error)


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


def is_supported(path: str | os.PathLike[str]) -> bool:
    """Whether the file's suffix (case-insensitive, ``.nii.gz`` included) is a supported format.

    :func:`load_slices` also accepts DICOM files without a ``.dcm`` suffix when they carry the
    ``DICM`` preamble; this suffix test does not open the file, so it says ``False`` for those.
    """
    return _suffix(Path(path)) in SUPPORTED_SUFFIXES


@dataclass(frozen=True)
class LoadedFile:
    """The slices of one file, how many were upscaled or filled, and its patient.

    Attributes
    ----------
    slices : list of numpy.ndarray
        As returned by :func:`load_slices`.
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


def load_file(
    path: str | os.PathLike[str], *, options: LoadOptions = DEFAULT_OPTIONS
) -> LoadedFile:
    """Like :func:`load_slices`, and also say how many slices were upscaled."""
    path = Path(path)
    _check_file(path)
    slices, patient = _decode(path, options)
    return _checked_file(path, slices, patient, options)


def load_dicom_dataset(
    dataset: pydicom.Dataset, *, name: str, options: LoadOptions = DEFAULT_OPTIONS
) -> LoadedFile:
    """Like :func:`load_file` for a DICOM dataset already in memory (e.g. retrieved over
    DICOMweb): the same checks, decoders and steps, with ``name`` in the error messages."""
    slices, patient = _dicom_slices(Path(name), dataset, options)
    return _checked_file(Path(name), slices, patient, options)


def _checked_file(
    path: Path, slices: list[np.ndarray], patient: str | None, options: LoadOptions
) -> LoadedFile:
    """The checks, resize and normalisation of :func:`load_file` on decoded slices."""
    filled = [False] * len(slices)
    for i, image in enumerate(slices):
        slices[i], filled[i] = _check_values(path, image, options.fill_nonfinite)
        _check_size(path, image.shape, options.min_size)
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


# --- dispatch and checks --------------------------------------------------------------------------


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
    if suffix in _PILLOW_SUFFIXES:
        reader = _read_pillow
    elif suffix in _NIFTI_SUFFIXES:
        reader = _read_nifti
    elif suffix in _DICOM_SUFFIXES or _has_dicom_preamble(path):
        return _read_dicom(path, options)
    else:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise ImageLoadError(
            path, f"unsupported file type {suffix or '(no suffix)'!r}; supported: {supported}"
        )
    return reader(path, options), None


def _check_values(
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


def _check_size(path: Path, shape: tuple[int, ...], min_size: int | None) -> None:
    if len(shape) != 2:
        raise ImageLoadError(path, f"expected a 2D image, got an array of shape {shape}")
    height, width = shape
    if min_size is not None and (height < min_size or width < min_size):
        raise ImageLoadError(
            path,
            f"image is {width}x{height} pixels, smaller than the minimum size "
            f"{min_size}x{min_size} (--min-size)",
        )


def _check_claimed_bytes(path: Path, claimed: int, what: str, limit: int) -> None:
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


def _is_constant(image: np.ndarray) -> bool:
    return bool(image.min() == image.max())


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of the first three channels (alpha, if any, is ignored)."""
    return rgb[..., :3] @ _BT601


# --- resize and normalise -------------------------------------------------------------------------


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


# --- Pillow: PNG, JPEG, TIFF, BMP -----------------------------------------------------------------


def _read_pillow(path: Path, options: LoadOptions) -> list[np.ndarray]:
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
        raise ImageLoadError(path, f"cannot read the image ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    """The cause of a decoder's error without the file's path (the message names it already)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


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
    _check_claimed_bytes(path, total, what, limit)


def _jpeg_array(path: Path, im: Image.Image, options: LoadOptions) -> np.ndarray:
    # The size check must see the stored size: draft() below shrinks the image.
    _check_size(path, (im.height, im.width), options.min_size)
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
    return _luminance(np.asarray(im))


# --- DICOM ----------------------------------------------------------------------------------------


def _read_dicom(path: Path, options: LoadOptions) -> tuple[list[np.ndarray], str | None]:
    try:
        # force=True: many valid DICOM files lack the 128-byte preamble.
        ds = pydicom.dcmread(path, force=True)
    except _DICOM_ERRORS as exc:
        raise ImageLoadError(path, f"cannot read as DICOM ({_reason(exc)})") from exc
    return _dicom_slices(path, ds, options)


def _dicom_slices(
    path: Path, ds: pydicom.Dataset, options: LoadOptions
) -> tuple[list[np.ndarray], str | None]:
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageLoadError(path, "DICOM file has no pixel data (or is not a DICOM file)")
    _check_dicom_bytes(path, ds, options.max_bytes)
    _require_decoder(path, ds)
    try:
        pixels = _dicom_grayscale(ds)
    except _DICOM_ERRORS as exc:
        raise ImageLoadError(path, f"cannot decode the DICOM pixel data ({exc})") from exc
    frames = int(ds.get("NumberOfFrames") or 1)
    patient = str(ds.get("PatientID", "") or "").strip() or None
    return (list(pixels) if frames > 1 else [pixels]), patient


def _check_dicom_bytes(path: Path, ds: pydicom.Dataset, limit: int) -> None:
    # Compressed pixel data (RLE, JPEG, ...) can expand to any size: the header says how much.
    missing = [name for name in ("Rows", "Columns") if name not in ds]
    if missing:
        raise ImageLoadError(
            path, f"DICOM file has pixel data but no {' or '.join(missing)} element in its header"
        )
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 8)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise ImageLoadError(
            path, f"DICOM header lacks valid Rows, Columns or frame count ({exc})"
        ) from None
    if min(rows, columns, frames, samples, bits) < 1:
        raise ImageLoadError(
            path, f"DICOM header gives a {columns}x{rows} image with {frames} frame(s)"
        )
    claimed = rows * columns * frames * samples * math.ceil(bits / 8)
    what = f"{frames} frame(s) of {columns}x{rows} pixels x {samples} sample(s) x {bits} bits"
    _check_claimed_bytes(path, claimed, what, limit)


def _require_decoder(path: Path, ds: pydicom.Dataset) -> None:
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ImageLoadError(
            path, f"pixel data is compressed as {syntax.name}, which pydicom cannot decode"
        ) from None
    if not decoder.is_available:
        plugins = "; ".join(decoder.missing_dependencies)
        raise ImageLoadError(
            path,
            f"pixel data is compressed as {syntax.name} and no installed pydicom plugin can decode"
            f" it; install one of these plugins: {plugins}",
        )


def _dicom_grayscale(ds: pydicom.Dataset) -> np.ndarray:
    """Decoded frames as displayed: modality LUT, then VOI LUT/window, MONOCHROME1 inverted."""
    pixels = ds.pixel_array  # pydicom 3 converts YBR colour to RGB here
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        return _luminance(apply_color_lut(pixels, ds))
    if not photometric.startswith("MONOCHROME"):
        return _luminance(pixels)
    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)
    # MONOCHROME1 shows low values bright. Negating is enough: normalisation is per image.
    return -values if photometric == "MONOCHROME1" else values


# --- NIfTI ----------------------------------------------------------------------------------------


def _read_nifti(path: Path, options: LoadOptions) -> list[np.ndarray]:
    try:
        image = nib.load(path)  # reads the header only; the voxels stay on disk
        _check_nifti_bytes(path, image, options.max_bytes)
        volumes = _nifti_volumes(path, image, options.nifti_volume)
    except ImageLoadError:
        raise
    except ImageFileError as exc:
        raise ImageLoadError(path, "not a NIfTI file (no valid NIfTI-1 or NIfTI-2 header)") from exc
    except _NIFTI_ERRORS as exc:
        raise ImageLoadError(path, f"cannot read as NIfTI ({_reason(exc)})") from exc
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
    _check_claimed_bytes(path, claimed, what, limit)
