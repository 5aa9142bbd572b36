"""Clinical inputs (issue 17): pydicom's whole test corpus through the loader, 4-D NIfTI
volumes, non-finite values, label files and patient-level groups."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medveil.errors import ImageLoadError
from medveil.loading import LoadOptions, load_file, load_slices

# --- pydicom's corpus ---------------------------------------------------------------------------

#: pydicom's test files as shipped inside the package. ``pydicom.data.get_testdata_files`` also
#: tries to download more from GitHub (about 10 s of failed requests offline, and a different
#: list online), so the test reads the shipped folder only: the same 78 files everywhere.
CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"

#: Files the loader refuses, and a fragment of the reason. Every other corpus file decodes.
REFUSED = {
    # no pixel data: RT plans and structures, structured reports, a waveform, bare datasets
    "ExplVR_BigEndNoMeta.dcm": "has no pixel data",
    "ExplVR_LitEndNoMeta.dcm": "has no pixel data",
    "UN_sequence.dcm": "has no pixel data",
    "empty_charset_LEI.dcm": "has no pixel data",
    "no_meta.dcm": "has no pixel data",
    "no_meta_group_length.dcm": "has no pixel data",
    "priv_SQ.dcm": "has no pixel data",
    "reportsi.dcm": "has no pixel data",
    "reportsi_with_empty_number_tags.dcm": "has no pixel data",
    "rtplan.dcm": "has no pixel data",
    "rtplan_truncated.dcm": "has no pixel data",
    "rtstruct.dcm": "has no pixel data",
    "test-SR.dcm": "has no pixel data",
    "waveform_ecg.dcm": "has no pixel data",
    # damaged headers
    "badVR.dcm": "lacks valid Rows, Columns",
    "meta_missing_tsyntax.dcm": "no Rows or Columns element",
    "nested_priv_SQ.dcm": "no Rows or Columns element",
    # damaged pixel data: no plugin decodes these (pydicom's own tests expect them to fail)
    "MR_truncated.dcm": "cannot decode the DICOM pixel data",
    "JPEG-lossy.dcm": "cannot decode the DICOM pixel data",
    "JPEG2000-embedded-sequence-delimiter.dcm": "cannot decode the DICOM pixel data",
}
#: Multi-frame files: one slice per frame (the rest give one slice).
FRAMES = {
    "SC_rgb_rle_16bit_2frame.dcm": 2,
    "SC_rgb_rle_2frame.dcm": 2,
    "SC_rgb_rle_32bit_2frame.dcm": 2,
    "examples_ybr_color.dcm": 30,
    "rtdose.dcm": 15,
    "rtdose_expb.dcm": 15,
    "rtdose_rle.dcm": 15,
}
#: Compressed files that decode only with the pixel-data plugins in pyproject.toml (pylibjpeg
#: with libjpeg, openjpeg and rle), not with pydicom and Pillow alone.
NEEDS_PLUGINS = (
    "GDCMJ2K_TextGBR.dcm",
    "JPEGLSNearLossless_08.dcm",
    "JPEGLSNearLossless_16.dcm",
    "JPGExtended.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_jls_lossy_sample.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
)


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.dcm"))


def test_corpus_is_the_shipped_one() -> None:
    names = {p.name for p in corpus_files()}
    assert len(names) == 78
    assert set(REFUSED) <= names and set(FRAMES) <= names and set(NEEDS_PLUGINS) <= names


def test_corpus_decodes_file_by_file_as_the_table_says() -> None:
    options = LoadOptions(size=16)
    decoded, refused = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the corpus's odd headers
        for path in corpus_files():
            try:
                decoded[path.name] = load_file(path, options=options)
            except ImageLoadError as exc:
                refused[path.name] = exc
    assert sorted(refused) == sorted(REFUSED)
    for name, exc in refused.items():
        assert name in str(exc) and REFUSED[name] in exc.problem, (name, exc.problem)
    assert len(decoded) == 58
    for name, result in decoded.items():
        assert len(result.slices) == FRAMES.get(name, 1), name
        for image in result.slices:
            assert image.shape == (16, 16) and image.dtype == np.float32
            assert image.min() == 0.0 and image.max() == 1.0, name


def test_no_decodable_compressed_file_is_refused() -> None:
    """Each file refused for its pixel data is one that pydicom, with every installed plugin,
    cannot decode either; each file needing a plugin decodes to pydicom's own array."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in REFUSED:
            ds = pydicom.dcmread(CORPUS / name, force=True)
            if "PixelData" not in ds:
                continue
            with pytest.raises(Exception):  # noqa: B017 - any decoder error will do
                ds.pixel_array  # noqa: B018
        for name in NEEDS_PLUGINS:
            ds = pydicom.dcmread(CORPUS / name)
            assert ds.file_meta.TransferSyntaxUID.is_compressed
            pixels = ds.pixel_array.astype(np.float64)
            if pixels.ndim == 3:  # colour: the loader takes BT.601 luma
                pixels = pixels @ np.array([0.299, 0.587, 0.114])
            else:  # grayscale: as displayed, through the modality and VOI LUTs
                pixels = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
            size = min(pixels.shape)
            image = load_slices(CORPUS / name, options=LoadOptions(size=size))[0]
            if pixels.shape == (size, size):
                expected = (pixels - pixels.min()) / (pixels.max() - pixels.min())
                np.testing.assert_allclose(image, expected, atol=1e-5)


# --- 4-D NIfTI and non-finite values -----------------------------------------------------------

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def save_nifti(volume: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(volume, np.eye(4) if affine is None else affine), path)
    return path


def test_nifti_volume_index_slices_that_volume(tmp_path: Path) -> None:
    source = NIBABEL_DATA / "example4d.nii.gz"  # 128x96x24x2, scaled int16
    image = nib.load(source)
    data = image.get_fdata()
    options = LoadOptions(size=16, nifti_volume=1)
    reference = save_nifti(data[..., 1], tmp_path / "volume1.nii", image.affine)
    got = load_slices(source, options=options)
    want = load_slices(reference, options=LoadOptions(size=16))
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(np.stack(got), np.stack(want), atol=1e-6)
    # The other volume differs: the index is not ignored.
    other = load_slices(source, options=LoadOptions(size=16, nifti_volume=0))
    assert not np.allclose(np.stack(other[: len(got)]), np.stack(got[: len(other)]))


def test_nifti_volume_all_is_every_volume_in_order(tmp_path: Path) -> None:
    volumes = np.stack(
        [np.random.default_rng(t).random((12, 10, 3)) for t in range(4)], axis=-1
    ).astype(np.float32)
    path = save_nifti(volumes, tmp_path / "series.nii.gz")
    every = load_slices(path, options=LoadOptions(size=8, nifti_volume="all"))
    one_by_one = [
        s for t in range(4) for s in load_slices(path, options=LoadOptions(size=8, nifti_volume=t))
    ]
    assert len(every) == 12
    np.testing.assert_array_equal(np.stack(every), np.stack(one_by_one))
    with pytest.raises(ImageLoadError, match=r"series\.nii\.gz.*--nifti-volume 4 is out of range.*0 to 3"):
        load_slices(path, options=LoadOptions(size=8, nifti_volume=4))


@pytest.mark.parametrize("bad", [-1, 1.5, "first", True])
def test_nifti_volume_option_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="nifti_volume"):
        LoadOptions(size=8, nifti_volume=bad)  # type: ignore[arg-type]


def nan_volume() -> np.ndarray:
    """A resampled volume: NaN outside a disc (the field of view), +inf in one slice."""
    rng = np.random.default_rng(3)
    volume = rng.random((20, 20, 4)).astype(np.float32)
    yy, xx = np.mgrid[:20, :20]
    outside = (yy - 9.5) ** 2 + (xx - 9.5) ** 2 > 8**2
    volume[outside, :3] = np.nan
    volume[0, 0, 3] = np.inf
    return volume


def test_nonfinite_values_are_refused_naming_the_option(tmp_path: Path) -> None:
    path = save_nifti(nan_volume(), tmp_path / "registered.nii.gz")
    with pytest.raises(ImageLoadError) as info:
        load_file(path, options=LoadOptions(size=20))
    assert "registered.nii.gz" in str(info.value)
    assert re.search(r"NaN or infinite values \(\d+ of 400 pixels.*--fill-nonfinite VALUE",
                     info.value.problem)


def test_fill_nonfinite_replaces_and_counts(tmp_path: Path) -> None:
    volume = nan_volume()
    path = save_nifti(volume, tmp_path / "registered.nii.gz")
    result = load_file(path, options=LoadOptions(size=20, fill_nonfinite=-1.0))
    assert result.filled == 4 and len(result.slices) == 4
    filled = np.where(np.isfinite(volume), volume, -1.0)
    expected = load_file(save_nifti(filled, tmp_path / "filled.nii.gz"),
                         options=LoadOptions(size=20))
    assert expected.filled == 0
    np.testing.assert_array_equal(np.stack(result.slices), np.stack(expected.slices))
    # A finite file is untouched and counts nothing.
    clean = load_file(tmp_path / "filled.nii.gz", options=LoadOptions(size=20, fill_nonfinite=0))
    assert clean.filled == 0
    np.testing.assert_array_equal(np.stack(clean.slices), np.stack(expected.slices))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "zero", True])
def test_fill_nonfinite_option_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="fill_nonfinite"):
        LoadOptions(size=8, fill_nonfinite=bad)  # type: ignore[arg-type]
