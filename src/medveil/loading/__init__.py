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

The jobs live in private modules behind this face: ``_options`` (:class:`LoadOptions`),
``_files`` (the entry points: file checks and the choice of decoder), one decoder per format
(``_pillow``, ``_dicom``, ``_nifti``), ``_checks`` (the checks of step 2 and what the decoders
share) and ``_steps`` (steps 2 to 4 on decoded slices, :class:`LoadedFile`).
"""

from __future__ import annotations

from medveil.loading._files import (
    SUPPORTED_SUFFIXES,
    is_supported,
    load_dicom_dataset,
    load_file,
    load_image,
    load_slices,
)
from medveil.loading._options import DEFAULT_MAX_BYTES, DEFAULT_OPTIONS, LoadOptions
from medveil.loading._steps import LoadedFile

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
