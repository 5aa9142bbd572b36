"""Decoding DICOM with pydicom: modality LUT, VOI LUT or window, MONOCHROME1 inverted, colour to
luminance, and the PatientID kept (never printed) so that a patient's images stay together."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

from medveil.errors import ImageLoadError
from medveil.loading._checks import check_claimed_bytes, decoder_reason, luminance
from medveil.loading._options import LoadOptions

__all__ = ["DICOM_SUFFIXES", "dicom_slices", "read_dicom"]

DICOM_SUFFIXES = frozenset({".dcm"})

# Third-party decoders signal bad files through many exception types; these are the ones that mean
# "this file cannot be decoded" (and not a bug of ours), so they become ImageLoadError.
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


def read_dicom(path: Path, options: LoadOptions) -> tuple[list[np.ndarray], str | None]:
    try:
        # force=True: many valid DICOM files lack the 128-byte preamble.
        ds = pydicom.dcmread(path, force=True)
    except _DICOM_ERRORS as exc:
        raise ImageLoadError(path, f"cannot read as DICOM ({decoder_reason(exc)})") from exc
    return dicom_slices(path, ds, options)


def dicom_slices(
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
    check_claimed_bytes(path, claimed, what, limit)


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
        return luminance(apply_color_lut(pixels, ds))
    if not photometric.startswith("MONOCHROME"):
        return luminance(pixels)
    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)
    # MONOCHROME1 shows low values bright. Negating is enough: normalisation is per image.
    return -values if photometric == "MONOCHROME1" else values
