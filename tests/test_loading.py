"""Tests of medveil.loading on files written here and on the sample files pydicom and nibabel ship."""

from __future__ import annotations

import os
import re
import struct
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import nibabel.testing
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder

from medveil.errors import ImageLoadError
from medveil.loading import (
    DEFAULT_MAX_BYTES,
    SUPPORTED_SUFFIXES,
    LoadOptions,
    is_supported,
    load_file,
    load_image,
    load_slices,
)

BT601 = np.array([0.299, 0.587, 0.114])


# --- helpers ----------------------------------------------------------------------------------


def dicom_sample(name: str) -> Path:
    """A test file shipped inside the installed pydicom package (no download)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name!r} is not in the installed package")
    return Path(path)


def nifti_sample(name: str) -> Path:
    path = Path(nibabel.testing.data_path) / name
    if not path.is_file():
        pytest.skip(f"nibabel test file {name!r} is not in the installed package")
    return path


def read_dicom(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.min()) / (x.max() - x.min())


def smooth(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth non-constant image in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    cy, cx = rng.uniform(-0.5, 0.5, 2)
    return minmax(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.3) + 0.3 * xx)


def save(array: np.ndarray, path: Path, **kwargs: object) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def opts(size: int, **kwargs: object) -> LoadOptions:
    return LoadOptions(size=size, **kwargs)  # type: ignore[arg-type]


def raises_for(path: Path) -> pytest.RaisesExc[ImageLoadError]:
    return pytest.raises(ImageLoadError, match=re.escape(path.name))


# --- API --------------------------------------------------------------------------------------


def test_is_supported_by_suffix_case_insensitively() -> None:
    for name in [
        "a.png",
        "a.JPG",
        "a.jpeg",
        "a.Tif",
        "a.tiff",
        "a.bmp",
        "a.DCM",
        "a.nii",
        "a.NII.GZ",
    ]:
        assert is_supported(name), name
    for name in ["a.txt", "a.gz", "a", "a.nii.bz2"]:
        assert not is_supported(name), name
    assert ".nii.gz" in SUPPORTED_SUFFIXES


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 1},
        {"size": 224.0},
        {"size": True},
        {"percentile": (99, 1)},
        {"percentile": (-1, 99)},
        {"percentile": (1, 101)},
        {"percentile": (1,)},
        {"nifti_axis": 3},
        {"min_size": 0},
        {"min_size": 2.5},
        {"max_bytes": 0},
        {"max_bytes": True},
    ],
)
def test_options_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        LoadOptions(**kwargs)  # type: ignore[arg-type]


def test_options_are_frozen_and_keyword_only() -> None:
    options = LoadOptions(percentile=[1, 99])  # type: ignore[arg-type]
    assert options.percentile == (1.0, 99.0)
    with pytest.raises(AttributeError):
        options.size = 10  # type: ignore[misc]
    with pytest.raises(TypeError):
        LoadOptions(224)  # type: ignore[misc]


def test_resize_gives_unit_range_float32_of_working_size(tmp_path: Path) -> None:
    path = save((smooth((100, 60)) * 200).astype(np.uint8), tmp_path / "wide.png")
    out = load_image(path, options=opts(32))
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0


def test_resize_is_antialiased(tmp_path: Path) -> None:
    # A one-pixel checkerboard averages to flat grey under an antialiased 4x downscale; a
    # point-sampling resize would keep the full contrast. A ramp keeps the image non-constant.
    checker = (np.indices((128, 128)).sum(axis=0) % 2) * 200.0
    ramp = np.linspace(0, 40, 128)[None, :]
    path = save((checker + ramp).astype(np.uint8), tmp_path / "checker.png")
    out = load_image(path, options=opts(32))
    assert np.abs(np.diff(out, axis=1)).max() < 0.2


def test_load_image_refuses_several_slices(tmp_path: Path) -> None:
    path = dicom_sample("SC_rgb_rle_2frame.dcm")
    assert len(load_slices(path, options=opts(16))) == 2
    with pytest.raises(ImageLoadError, match=r"holds 2 slices"):
        load_image(path, options=opts(16))


# --- Pillow formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_depth_is_kept(tmp_path: Path, suffix: str) -> None:
    # 1000 and 1001 (above 255, one apart) would become the same value in 8 bits.
    image = np.full((32, 32), 1000, dtype=np.uint16)
    image[:, 16:] = 1001
    image[0, 0] = 3000
    path = save(image, tmp_path / f"deep{suffix}")
    with Image.open(path) as im:
        assert im.mode == "I;16"
    out = load_image(path, options=opts(32))
    np.testing.assert_allclose(out, minmax(image), atol=1e-6)
    assert out[5, 20] - out[5, 5] == pytest.approx(1 / 2000, rel=1e-3)


def test_float_tiff_values_are_kept(tmp_path: Path) -> None:
    image = (smooth((40, 40)) * 1e-3 - 5.0).astype(np.float32)
    out = load_image(save(image, tmp_path / "float.tif"), options=opts(40))
    np.testing.assert_allclose(out, minmax(image), atol=1e-4)


def test_rgb_with_equal_channels_equals_gray(tmp_path: Path) -> None:
    gray = (smooth((48, 48)) * 180).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    gray_out = load_image(save(gray, tmp_path / "gray.png"), options=opts(32))
    rgb_out = load_image(save(rgb, tmp_path / "rgb.png"), options=opts(32))
    rgba_out = load_image(save(np.dstack([rgb, gray]), tmp_path / "rgba.png"), options=opts(32))
    np.testing.assert_allclose(rgb_out, gray_out, atol=1e-6)
    np.testing.assert_allclose(rgba_out, gray_out, atol=1e-6)


def test_colour_becomes_bt601_luminance(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = load_image(save(rgb, tmp_path / "colour.bmp"), options=opts(32))
    np.testing.assert_allclose(out, minmax(rgb @ BT601), atol=1e-6)


def test_palette_image_becomes_luminance(tmp_path: Path) -> None:
    gray = (smooth((32, 32)) * 200).astype(np.uint8)
    path = tmp_path / "palette.png"
    Image.fromarray(gray).convert("P").save(path)
    np.testing.assert_allclose(load_image(path, options=opts(32)), minmax(gray), atol=1e-6)


def test_jpeg_draft_matches_full_decode(tmp_path: Path) -> None:
    # A 512-pixel JPEG is decoded at 1/2 scale in the DCT domain; the result must still match a
    # full-size decode resized the slow way, to within JPEG-level error.
    gray = (smooth((512, 512), seed=3) * 200).astype(np.uint8)
    jpeg = save(gray, tmp_path / "big.jpg", quality=95)
    with Image.open(jpeg) as im:
        png = save(np.asarray(im), tmp_path / "decoded.png")
    fast = load_image(jpeg, options=opts(224))
    slow = load_image(png, options=opts(224))
    assert fast.shape == (224, 224)
    assert np.abs(fast - slow).max() < 0.01


def test_rgb_jpeg_gives_luminance(tmp_path: Path) -> None:
    gray = (smooth((300, 300), seed=4) * 200).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    gray_out = load_image(save(gray, tmp_path / "gray.jpg", quality=95), options=opts(100))
    rgb_out = load_image(save(rgb, tmp_path / "rgb.jpg", quality=95), options=opts(100))
    assert np.abs(rgb_out - gray_out).max() < 0.03


def test_multipage_tiff_gives_one_slice_per_page(tmp_path: Path) -> None:
    pages = [Image.fromarray((smooth((20, 20), seed=i) * 200).astype(np.uint8)) for i in range(3)]
    path = tmp_path / "stack.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert len(load_slices(path, options=opts(20))) == 3


def test_percentile_clips_outliers(tmp_path: Path) -> None:
    image = (smooth((40, 40)) * 1000).astype(np.uint16)
    image[0, 0] = 60000  # a hot pixel squeezes the plain min-max output towards 0
    path = save(image, tmp_path / "hot.png")
    plain = load_image(path, options=opts(40))
    clipped = load_image(path, options=opts(40, percentile=(1.0, 99.0)))
    lo, hi = np.percentile(minmax(image), [1.0, 99.0])
    np.testing.assert_allclose(
        clipped, (np.clip(minmax(image), lo, hi) - lo) / (hi - lo), atol=1e-5
    )
    assert np.median(plain) < 0.02 < np.median(clipped)
    assert clipped.min() == 0.0 and clipped.max() == 1.0


def test_truncated_images_are_not_padded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    path = save((smooth((32, 32)) * 200).astype(np.uint8), tmp_path / "fine.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(path, options=opts(32))


# --- DICOM ------------------------------------------------------------------------------------


def test_ct_small_loads() -> None:
    out = load_image(dicom_sample("CT_small.dcm"), options=opts(64))
    assert out.shape == (64, 64) and out.min() == 0.0 and out.max() == 1.0


def without_window(ds: pydicom.Dataset) -> pydicom.Dataset:
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def test_modality_lut_is_applied(tmp_path: Path) -> None:
    # A negative rescale slope flips the image; a positive one would vanish in the normalisation.
    ds = without_window(read_dicom(dicom_sample("CT_small.dcm")))
    ds.save_as(tmp_path / "plain.dcm")
    ds.RescaleSlope, ds.RescaleIntercept = -2, 100
    ds.save_as(tmp_path / "flipped.dcm")
    plain = load_image(tmp_path / "plain.dcm", options=opts(128))
    flipped = load_image(tmp_path / "flipped.dcm", options=opts(128))
    np.testing.assert_allclose(flipped, 1.0 - plain, atol=1e-6)


def test_window_is_applied(tmp_path: Path) -> None:
    ds = without_window(read_dicom(dicom_sample("MR_small.dcm")))
    raw = ds.pixel_array.astype(np.float64)
    low, high = np.percentile(raw, [30, 70])
    ds.WindowCenter, ds.WindowWidth = (low + high) / 2, high - low
    ds.save_as(tmp_path / "window.dcm")
    out = load_image(tmp_path / "window.dcm", options=opts(64))
    assert (out[raw < low - 1] == 0).all() and (out[raw > high + 1] == 1).all()
    inside = (raw > low + 1) & (raw < high - 1)
    assert ((out[inside] > 0) & (out[inside] < 1)).all()


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    # A real MONOCHROME1 computed radiograph, without a .dcm suffix (found by its DICM preamble).
    path = dicom_sample("6154")
    ds = read_dicom(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(tmp_path / "as_monochrome2.dcm")
    inverted = load_image(path, options=opts(16))
    plain = load_image(tmp_path / "as_monochrome2.dcm", options=opts(16))
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)


def test_rgb_dicom_becomes_luminance() -> None:
    path = dicom_sample("SC_rgb_rle.dcm")
    expected = minmax(read_dicom(path).pixel_array @ BT601)
    np.testing.assert_allclose(load_image(path, options=opts(100)), expected, atol=1e-6)


def test_multiframe_dicom_gives_one_slice_per_frame() -> None:
    path = dicom_sample("examples_ybr_color.dcm")
    slices = load_slices(path, options=opts(64))
    assert len(slices) == 30 and all(s.shape == (64, 64) for s in slices)


def test_compressed_dicom_without_plugin_names_the_plugins() -> None:
    path = dicom_sample("MR_small_jpeg_ls_lossless.dcm")
    if get_decoder(read_dicom(path).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-LS plugin is installed, so this file decodes")
    with pytest.raises(ImageLoadError, match=re.escape(path.name)) as info:
        load_image(path, options=opts(64))
    assert "JPEG-LS" in info.value.problem and "pylibjpeg" in info.value.problem


def test_truncated_dicom_is_an_error() -> None:
    path = dicom_sample("MR_truncated.dcm")
    with raises_for(path):
        load_image(path, options=opts(64))


def test_dcm_without_pixel_data_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("not a DICOM file at all\n" * 20)
    with raises_for(path):
        load_image(path, options=opts(16))


# --- NIfTI ------------------------------------------------------------------------------------


def test_nifti_volume_slices_along_the_chosen_axis() -> None:
    path = nifti_sample("anatomical.nii")
    shape = nib.load(path).shape  # (33, 41, 25), stored close to RAS+
    for axis in (0, 1, 2):
        slices = load_slices(path, options=opts(16, nifti_axis=axis))
        assert 0 < len(slices) <= shape[axis]
        assert all(s.shape == (16, 16) and s.min() == 0 and s.max() == 1 for s in slices)


def save_nifti(volume: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


def test_nifti_blank_edge_slices_are_skipped(tmp_path: Path) -> None:
    volume = np.zeros((24, 24, 6), dtype=np.float32)
    for k in range(1, 5):
        volume[..., k] = smooth((24, 24), seed=k)
    path = save_nifti(volume, tmp_path / "vol.nii.gz")
    slices = load_slices(path, options=opts(24))
    assert len(slices) == 4
    np.testing.assert_allclose(slices[0], minmax(volume[..., 1]), atol=1e-6)


def test_nifti_2d_and_single_slice_give_one_slice(tmp_path: Path) -> None:
    image = smooth((24, 24)).astype(np.float32)
    for name, data in [
        ("flat.nii", image),
        ("one.nii", image[..., None]),
        ("t1.nii", image[..., None, None]),
    ]:
        out = load_image(save_nifti(data, tmp_path / name), options=opts(24))
        np.testing.assert_allclose(out, minmax(image), atol=1e-6)


def test_nifti_4d_is_an_error_naming_the_option() -> None:
    path = nifti_sample("example4d.nii.gz")
    with pytest.raises(
        ImageLoadError,
        match=re.escape(path.name) + r".*128x96x24x2 holds 2 volumes.*--nifti-volume INDEX",
    ):
        load_slices(path, options=opts(16))


def test_blank_nifti_volume_is_an_error(tmp_path: Path) -> None:
    path = save_nifti(np.zeros((24, 24, 5), dtype=np.int16), tmp_path / "blank.nii")
    with pytest.raises(ImageLoadError, match=r"blank\.nii.*all 5 slices are constant"):
        load_slices(path, options=opts(24))


# --- bad input --------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.png"
    with pytest.raises(ImageLoadError, match=r"absent\.png.*not found"):
        load_image(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageLoadError, match=r"empty\.jpg.*empty"):
        load_image(path)


def test_text_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, this is not an image\n")
    with raises_for(path):
        load_image(path)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(ImageLoadError, match=r"notes\.txt.*unsupported file type '\.txt'"):
        load_image(path)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    whole = save((smooth((300, 300)) * 200).astype(np.uint8), tmp_path / f"whole{suffix}")
    path = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with raises_for(path):
        load_image(path, options=opts(64))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_tiff(tmp_path: Path, bad: float) -> None:
    image = smooth((32, 32)).astype(np.float32)
    image[3, 4] = bad
    path = save(image, tmp_path / "nonfinite.tif")
    with pytest.raises(ImageLoadError, match=r"nonfinite\.tif.*NaN or infinite"):
        load_image(path, options=opts(32))


def test_non_finite_nifti(tmp_path: Path) -> None:
    volume = np.stack([smooth((24, 24), seed=k) for k in range(3)], axis=2).astype(np.float32)
    volume[5, 5, 1] = np.nan
    path = save_nifti(volume, tmp_path / "nan.nii.gz")
    with pytest.raises(ImageLoadError, match=r"nan\.nii\.gz.*NaN"):
        load_slices(path, options=opts(24))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_min_size_refuses_small_images(tmp_path: Path, suffix: str) -> None:
    # For JPEG the stored size is checked, before the DCT-domain downscale.
    path = save((smooth((150, 200)) * 200).astype(np.uint8), tmp_path / f"small{suffix}")
    with pytest.raises(ImageLoadError, match=r"small\.(png|jpg).*200x150.*224x224.*--min-size"):
        load_image(path, options=opts(224, min_size=224))
    assert load_image(path, options=opts(224, min_size=150)).shape == (224, 224)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_small_images_are_upscaled_by_default(tmp_path: Path, suffix: str) -> None:
    image = (smooth((160, 315), seed=2) * 200).astype(np.uint8)
    path = save(image, tmp_path / f"small{suffix}")
    loaded = load_file(path, options=opts(224))
    assert loaded.upscaled == 1 and len(loaded.slices) == 1
    # Bilinear interpolation of the decoded image, then the per-image min-max.
    decoded = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    unit = Image.fromarray(minmax(decoded).astype(np.float32))
    expected = minmax(np.asarray(unit.resize((224, 224), Image.Resampling.BILINEAR)))
    np.testing.assert_allclose(loaded.slices[0], expected, atol=1e-6)


def test_upscaled_counts_only_images_smaller_than_n(tmp_path: Path) -> None:
    big = save((smooth((240, 260)) * 200).astype(np.uint8), tmp_path / "big.png")
    tall = save((smooth((300, 100)) * 200).astype(np.uint8), tmp_path / "tall.png")
    assert load_file(big, options=opts(224)).upscaled == 0
    assert load_file(tall, options=opts(224)).upscaled == 1
    pages = [Image.fromarray((smooth((20, 20), seed=i) * 200).astype(np.uint8)) for i in range(3)]
    stack = tmp_path / "stack.tif"
    pages[0].save(stack, save_all=True, append_images=pages[1:])
    assert load_file(stack, options=opts(32)).upscaled == 3
    assert load_file(stack, options=opts(16)).upscaled == 0


def test_constant_image(tmp_path: Path) -> None:
    path = save(np.zeros((64, 64), dtype=np.uint8), tmp_path / "black.png")
    with pytest.raises(ImageLoadError, match=r"black\.png.*constant"):
        load_image(path, options=opts(32))


def test_constant_between_percentiles(tmp_path: Path) -> None:
    image = np.zeros((64, 64), dtype=np.uint8)
    image[0, 0] = 255
    path = save(image, tmp_path / "speck.png")
    assert load_image(path, options=opts(64)).max() == 1.0
    with pytest.raises(ImageLoadError, match=r"speck\.png.*percentiles"):
        load_image(path, options=opts(64, percentile=(1, 99)))


def test_truncated_nifti(tmp_path: Path) -> None:
    volume = np.stack([smooth((24, 24), seed=k) for k in range(3)], axis=2).astype(np.float32)
    whole = save_nifti(volume, tmp_path / "whole.nii.gz")
    path = tmp_path / "cut.nii.gz"
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with raises_for(path):
        load_slices(path, options=opts(24))


# --- links, folders and special files ---------------------------------------------------------


def test_broken_symlink_is_named(tmp_path: Path) -> None:
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(ImageLoadError, match=r"gone\.png: broken symbolic link.*nowhere\.png"):
        load_image(link)


def test_symlink_loop_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    with pytest.raises(ImageLoadError, match=r"a\.png: symbolic link loop"):
        load_image(tmp_path / "a.png")


def test_folders_and_pipes_are_not_images(tmp_path: Path) -> None:
    (tmp_path / "x.png").mkdir()
    with pytest.raises(ImageLoadError, match=r"x\.png: is a folder, not an image file"):
        load_image(tmp_path / "x.png")
    (tmp_path / "linked.png").symlink_to(tmp_path / "x.png")
    with pytest.raises(ImageLoadError, match=r"linked\.png: symbolic link to a folder"):
        load_image(tmp_path / "linked.png")
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageLoadError, match=r"pipe\.png: not a regular file"):
        load_image(tmp_path / "pipe.png")


# --- size limits before decoding (decompression bombs) -------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` 8-bit gray pixels, with one row of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * (width + 1))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def test_pillow_decompression_bomb_is_named(tmp_path: Path) -> None:
    path = png_header_only(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(ImageLoadError, match=r"huge\.png: refused by Pillow's decompression-bomb"):
        load_image(path)


def test_multipage_tiff_over_the_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    pages = [Image.fromarray((smooth((20, 20), seed=i) * 200).astype(np.uint8)) for i in range(3)]
    path = tmp_path / "stack.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    with pytest.raises(ImageLoadError, match=r"stack\.tif: .*3 frames of 20x20.*--max-image-mb"):
        load_slices(path, options=opts(20, max_bytes=1000))
    assert len(load_slices(path, options=opts(20, max_bytes=1200))) == 3


def dicom_claiming(path: Path, *, rows: int, columns: int, frames: int, pixels: bytes) -> Path:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_claiming_gigabytes_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = dicom_claiming(
        tmp_path / "bomb.dcm", rows=4096, columns=4096, frames=64, pixels=b"\0\1" * 64
    )
    import medveil.loading._dicom

    def never(ds: object) -> None:
        raise AssertionError("the pixel data must not be decoded")

    monkeypatch.setattr(medveil.loading._dicom, "_dicom_grayscale", never)
    with pytest.raises(ImageLoadError, match=r"bomb\.dcm: .*64 frame\(s\) of 4096x4096.*2,048\.0 MiB"):
        load_slices(path)


def test_dicom_limit_can_be_raised(tmp_path: Path) -> None:
    pixels = (np.arange(2 * 16 * 16, dtype=np.uint16) % 97).tobytes()
    path = dicom_claiming(tmp_path / "two.dcm", rows=16, columns=16, frames=2, pixels=pixels)
    with pytest.raises(ImageLoadError, match=r"two\.dcm: .*over the limit of 0\.0 MiB"):
        load_slices(path, options=opts(16, max_bytes=1023))
    assert len(load_slices(path, options=opts(16, max_bytes=1024))) == 2


def test_nifti_claiming_gigabytes_is_refused_before_loading(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((2048, 2048, 512))
    path = tmp_path / "bomb.nii"
    # A header that claims 4 GiB of voxels, followed by a few bytes.
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0\1" * 32)
    with pytest.raises(ImageLoadError, match=r"bomb\.nii: .*2048x2048x512 voxels.*4,096\.0 MiB"):
        load_slices(path)
    volume = np.stack([smooth((24, 24), seed=k) for k in range(3)], axis=2).astype(np.float32)
    small = save_nifti(volume, tmp_path / "small.nii.gz")
    with pytest.raises(ImageLoadError, match=r"small\.nii\.gz: .*24x24x3 voxels of 4 bytes"):
        load_slices(small, options=opts(24, max_bytes=24 * 24 * 3 * 4 - 1))
    assert len(load_slices(small, options=opts(24, max_bytes=24 * 24 * 3 * 4))) == 3


def test_default_limit_is_one_gibibyte() -> None:
    assert DEFAULT_MAX_BYTES == LoadOptions().max_bytes == 2**30
