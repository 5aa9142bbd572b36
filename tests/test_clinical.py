"""Clinical inputs (issue 17): pydicom's whole test corpus through the loader, 4-D NIfTI
volumes, non-finite values, label files and patient-level groups."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from typer.testing import CliRunner

from conftest import smooth_images
from medveil.calibration import calibrate
from medveil.cli import app
from medveil.errors import DatasetLayoutError, ImageLoadError
from medveil.keys import generate_key
from medveil.layout import scan_labels
from medveil.loading import LoadOptions, load_file, load_slices
from medveil.obfuscate import group_hash, group_name, obfuscate_dataset
from medveil.store import ObfuscatedStore
from medveil.training.data import DataSource, open_data, plan_splits

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


# --- labels files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key():
    return calibrate(generate_key(size=32, rank=6), smooth_images(16, 32, seed=9))


def flat_folder(root: Path, count: int, *, size: int = 36) -> list[str]:
    """``count`` PNGs in ``root/scans`` (no class folders); their paths relative to ``root``."""
    (root / "scans").mkdir(parents=True)
    names = []
    for i, image in enumerate(smooth_images(count, size, seed=4)):
        name = f"scans/img-{i:02d}.png"
        Image.fromarray((image * 255).astype(np.uint8)).save(root / name)
        names.append(name)
    return names


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def test_labels_file_gives_classes_splits_and_groups(tmp_path: Path) -> None:
    names = flat_folder(tmp_path / "src", 5)
    csv = write_csv(tmp_path / "labels.csv", [
        "\ufeffPath,Label,Split,Group",  # a spreadsheet's BOM and capitalised header
        f"{names[0]},tumour,Training,p1",
        f"{names[1]},normal,train,p2",
        "",
        f"{names[2]},tumour,val,",
        f"{names[3]},normal,Testing,p3",
        f"{names[4]},tumour,train,p1",
    ])
    index = scan_labels(tmp_path / "src", csv)
    assert index.classes == ("normal", "tumour") and index.layout == "labels-file"
    assert list(index.splits) == ["train", "val", "test"]
    train = [(str(i.path), i.label, i.group) for i in index.splits["train"]]
    assert train == [(names[0], 1, "p1"), (names[1], 0, "p2"), (names[4], 1, "p1")]
    assert [(str(i.path), i.group) for i in index.splits["val"]] == [(names[2], None)]
    assert [(str(i.path), i.label) for i in index.splits["test"]] == [(names[3], 0)]
    # Without a split column: one split, "all".
    plain = write_csv(tmp_path / "plain.csv", ["path,label", f"{names[0]},a", f"{names[1]},b"])
    assert list(scan_labels(tmp_path / "src", plain).splits) == ["all"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["path,label", "../outside.png,a"], r"row 2: unknown path \.\./outside\.png"),
        (["path,label", "/etc/passwd,a"], r"row 2: unknown path /etc/passwd"),
        (["path,label", "scans/img-00.png,a", "scans/nope.png,b"], r"row 3: missing file scans/nope\.png"),
        (["path,label", "scans/img-00.png,"], r"row 2: scans/img-00\.png has an empty label"),
        (["path,label", "scans/img-00.png,a", "scans/img-00.png,b"], r"row 3: .*listed twice \(also in row 2\)"),
        (["path,label,split", "scans/img-00.png,a,train", "scans/img-01.png,b,holdout"], r"row 3: unknown split holdout"),
        (["path,label,split", "scans/img-00.png,a,train", "scans/img-01.png,b,test"], r"row 3: class b is empty in the train split"),
        (["path,label", "scans/img-00.png,a,extra"], r"row 2: 3 cells for the 2 columns"),
        (["file,label", "scans/img-00.png,a"], r"header row must name the columns path,label"),
        (["path,label,patient", "scans/img-00.png,a,x"], r"header row must name"),
        (["path,label"], r"lists no files"),
    ],
)
def test_labels_file_errors_name_the_row(tmp_path: Path, rows: list[str], message: str) -> None:
    flat_folder(tmp_path / "src", 2)
    csv = write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(DatasetLayoutError, match=re.escape(str(csv)) + ".*" + message):
        scan_labels(tmp_path / "src", csv)


# --- groups in the store and in train's splits --------------------------------------------------


def test_store_keeps_keyed_group_hashes_from_the_labels_file(tmp_path: Path, key) -> None:
    names = flat_folder(tmp_path / "src", 6)
    patients = ["Smith^John", "Smith^John", "Doe^Jane", "", "Doe^Jane", "Roe^Richard"]
    csv = write_csv(tmp_path / "labels.csv", ["path,label,group"] + [
        f"{n},{'ab'[i % 2]},{p}" for i, (n, p) in enumerate(zip(names, patients))
    ])
    result = obfuscate_dataset(
        tmp_path / "src", key=key, output=tmp_path / "store", labels=csv, device="cpu",
        files_per_shard=4,
    )
    store = ObfuscatedStore(tmp_path / "store")
    groups = store.groups("all")
    listing = store.manifest["plan"]["files"]
    index = scan_labels(tmp_path / "src", csv)
    expected = [group_hash(key, listing, group_name(item, None)) for item in index.splits["all"]]
    assert groups.tolist() == expected
    assert groups[0] == groups[1] and groups[2] == groups[4]
    assert len(set(groups.tolist())) == 4 == result.groups == store.manifest["splits"]["all"]["groups"]
    # The empty cell falls back to the file: its own group.
    assert expected[3] == group_hash(key, listing, "file:" + names[3].encode().hex())
    # Another key gives unrelated values; no stored byte names a patient.
    other = calibrate(generate_key(size=32, rank=6), smooth_images(16, 32, seed=9))
    assert group_hash(other, listing, "group:Smith^John") != expected[0]
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"Smith" not in data and b"Doe" not in data and b"img-0" not in data, path


def dicom_folder(root: Path) -> None:
    """Patient A: two single-frame files; patient B: one; a 2-frame file without PatientID."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    plan = [
        ("CT_small.dcm", "a/ct-1.dcm", "PAT-0001"),
        ("MR_small.dcm", "a/mr-1.dcm", "PAT-0001"),
        ("MR_small.dcm", "b/mr-2.dcm", "PAT-0002"),
        ("SC_rgb_rle_2frame.dcm", "b/frames.dcm", None),
    ]
    for source, target, patient in plan:
        ds = pydicom.dcmread(CORPUS / source)
        if patient is None:
            ds.PatientID = ""
        else:
            ds.PatientID = patient
        ds.save_as(root / target)


def test_dicom_patients_and_frames_form_groups(tmp_path: Path, key) -> None:
    dicom_folder(tmp_path / "src")
    obfuscate_dataset(tmp_path / "src", key=key, output=tmp_path / "store", device="cpu")
    store = ObfuscatedStore(tmp_path / "store")
    groups = store.groups("all").tolist()
    listing = store.manifest["plan"]["files"]
    # Sorted by class, then path: a/ct-1, a/mr-1, b/frames (2 frames), b/mr-2.
    patient_a = group_hash(key, listing, "patient:PAT-0001")
    patient_b = group_hash(key, listing, "patient:PAT-0002")
    frames = group_hash(key, listing, "file:" + b"b/frames.dcm".hex())
    assert groups == [patient_a, patient_a, frames, frames, patient_b]
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert b"PAT-000" not in path.read_bytes(), path


def test_train_splits_never_cut_a_group(tmp_path: Path, key) -> None:
    names = flat_folder(tmp_path / "src", 36, size=32)
    # 12 patients of 3 images; classes alternate by patient.
    csv = write_csv(tmp_path / "labels.csv", ["path,label,group"] + [
        f"{n},{'ab'[(i // 3) % 2]},patient-{i // 3}" for i, n in enumerate(names)
    ])
    obfuscate_dataset(tmp_path / "src", key=key, output=tmp_path / "store", labels=csv, device="cpu")
    source = open_data(tmp_path / "store", image_size=32)
    groups = source.groups["all"]
    assert len(set(groups.tolist())) == 12
    for seed in range(5):
        plan = plan_splits(source, val_fraction=0.25, test_fraction=0.25, seed=seed)
        sides = [set(groups[indices].tolist()) for _, indices in plan.parts.values()]
        assert sum(len(s) for s in sides) == 12, seed  # each patient on exactly one side
        assert all(sides), seed
    # The same data without its groups: a plain stratified split cuts patients.
    ungrouped = open_data(tmp_path / "store", image_size=32)
    ungrouped = type(ungrouped)(
        kind=ungrouped.kind, classes=ungrouped.classes, tables=ungrouped.tables,
        identity=ungrouped.identity, provenance=ungrouped.provenance,
    )
    plan = plan_splits(ungrouped, val_fraction=0.25, test_fraction=0.25, seed=0)
    sides = [set(groups[indices].tolist()) for _, indices in plan.parts.values()]
    assert sum(len(s) for s in sides) > 12


# --- the command line ---------------------------------------------------------------------------

runner = CliRunner()


def test_cli_labels_nifti_volume_and_fill_nonfinite(tmp_path: Path, key) -> None:
    key_file = key.save(tmp_path / "keys" / "site.key")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(NIBABEL_DATA / "example4d.nii.gz", src / "fmri.nii.gz")  # 2 volumes x 24 slices
    save_nifti(nan_volume(), src / "registered.nii.gz")  # 4 slices, all with NaN or inf
    csv = write_csv(tmp_path / "labels.csv", [
        "path,label,group", "fmri.nii.gz,fmri,subject-1", "registered.nii.gz,anat,subject-1",
    ])
    base = ["obfuscate", str(src), "--key", str(key_file), "--labels", str(csv), "--device", "cpu"]
    strict = runner.invoke(app, [*base, "--nifti-volume", "all", "-o", str(tmp_path / "s1")])
    assert strict.exit_code == 2
    assert "registered.nii.gz" in strict.output and "--fill-nonfinite VALUE" in strict.output
    four_d = runner.invoke(app, [*base, "--fill-nonfinite", "0", "-o", str(tmp_path / "s2")])
    assert four_d.exit_code == 2 and "--nifti-volume INDEX" in four_d.output
    bad = runner.invoke(app, [*base, "--nifti-volume", "last", "-o", str(tmp_path / "s3")])
    assert bad.exit_code == 2 and "--nifti-volume" in bad.output
    run = runner.invoke(app, [
        *base, "--nifti-volume", "all", "--fill-nonfinite", "0", "-o", str(tmp_path / "store"),
    ])
    assert run.exit_code == 0, run.output
    expected = len(load_slices(src / "fmri.nii.gz", options=LoadOptions(size=32, nifti_volume="all")))
    assert f"{expected + 4} images" in run.output
    assert "4 image(s) with NaN or infinite values filled with 0 (--fill-nonfinite)" in run.output
    assert "1 group(s)" in run.output
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["splits"]["all"]["filled"] == 4 and manifest["splits"]["all"]["groups"] == 1
    assert manifest["load"]["nifti_volume"] == "all" and manifest["layout"] == "labels-file"
    info = runner.invoke(app, ["info", str(tmp_path / "store"), "--json"])
    assert json.loads(info.output)["splits"]["all"]["filled"] == 4


def test_a_store_of_single_images_splits_as_before(tmp_path: Path, key) -> None:
    """Every group a single image (2-D files, no patients): no groups are attached, so the
    split is the one the same labels give without a store (as for the plaintext folder)."""
    names = flat_folder(tmp_path / "src", 12, size=32)
    csv = write_csv(tmp_path / "labels.csv", ["path,label"] + [
        f"{n},{'ab'[i % 2]}" for i, n in enumerate(names)
    ])
    obfuscate_dataset(tmp_path / "src", key=key, output=tmp_path / "store", labels=csv, device="cpu")
    source = open_data(tmp_path / "store", image_size=32)
    assert source.groups == {}
    assert len(set(ObfuscatedStore(tmp_path / "store").groups("all").tolist())) == 12
    labels = source.tables["all"].labels
    plain = DataSource.from_arrays(np.zeros((12, 2, 2)), labels, classes=("a", "b"))
    for seed in range(3):
        assert plan_splits(source, val_fraction=0.25, test_fraction=0.25, seed=seed) == plan_splits(
            plain, val_fraction=0.25, test_fraction=0.25, seed=seed
        )


def test_cli_show_takes_nifti_volume_and_fill_nonfinite(tmp_path: Path) -> None:
    """``show`` draws the middle slice of the volume --nifti-volume picks (byte-identical to
    the figure of that volume saved alone) and fills NaN with --fill-nonfinite."""
    svd = generate_key(preset="svd", size=16, rank=4)  # noise-free: the figure is reproducible
    key_file = svd.save(tmp_path / "keys" / "site.key")
    source = NIBABEL_DATA / "example4d.nii.gz"
    image = nib.load(source)
    for t in (0, 1):
        (tmp_path / f"v{t}").mkdir()
        save_nifti(image.get_fdata()[..., t], tmp_path / f"v{t}" / "example4d.nii.gz", image.affine)
    show = ["show", "--key", str(key_file)]

    def figure(path: Path, out: str, *options: str) -> bytes:
        result = runner.invoke(app, [*show, str(path), "-o", str(tmp_path / out), *options])
        assert result.exit_code == 0, result.output
        return (tmp_path / out).read_bytes()

    refused = runner.invoke(app, [*show, str(source), "-o", str(tmp_path / "x.png")])
    assert refused.exit_code == 2 and "--nifti-volume INDEX" in refused.output
    picked = figure(source, "picked.png", "--nifti-volume", "1")
    assert picked == figure(tmp_path / "v1" / "example4d.nii.gz", "alone.png")
    assert picked != figure(tmp_path / "v0" / "example4d.nii.gz", "other.png")
    registered = save_nifti(nan_volume(), tmp_path / "registered.nii.gz")
    refused = runner.invoke(app, [*show, str(registered), "-o", str(tmp_path / "y.png")])
    assert refused.exit_code == 2 and "--fill-nonfinite VALUE" in refused.output
    (tmp_path / "filled").mkdir()
    filled = save_nifti(  # the same name: the figure's title is the file name
        np.nan_to_num(nan_volume(), nan=0.0, posinf=0.0), tmp_path / "filled" / registered.name
    )
    assert figure(registered, "r.png", "--fill-nonfinite", "0") == figure(filled, "f.png")


def test_cli_keygen_calibrates_on_a_labels_file_with_the_loader_options(tmp_path: Path) -> None:
    """``keygen --calibrate`` reads the files a labels CSV names, with --fill-nonfinite; the
    quantizer range (a percentile of the images' rank-k factors, independent of the secret)
    is the one those images give."""
    src = tmp_path / "src"
    names = flat_folder(src, 4, size=32)
    save_nifti(nan_volume(), src / "registered.nii.gz")
    csv = write_csv(tmp_path / "labels.csv", ["path,label", "registered.nii.gz,a", f"{names[1]},b"])
    base = ["keygen", "--size", "20", "--rank", "4", "--calibrate", str(src)]
    from medveil.calibration import load_calibration_images
    from medveil.keys import Key

    # Without the labels file: the class folder scans/ (4 PNGs), not the loose NIfTI.
    folders = runner.invoke(app, [*base, "-o", str(tmp_path / "k0.key")])
    assert folders.exit_code == 0, folders.output
    assert Key.load(tmp_path / "k0.key").calibration.images == 4
    only_nan = write_csv(tmp_path / "nan.csv", ["path,label", "registered.nii.gz,a"])
    strict = runner.invoke(app, [*base, "--labels", str(only_nan), "-o", str(tmp_path / "k1.key")])
    assert strict.exit_code == 2
    assert "no calibration image could be loaded" in strict.output
    assert "--fill-nonfinite VALUE" in strict.output
    done = runner.invoke(app, [
        *base, "--labels", str(csv), "--fill-nonfinite", "0", "-o", str(tmp_path / "k2.key"),
    ])
    assert done.exit_code == 0, done.output
    key = Key.load(tmp_path / "k2.key")
    options = LoadOptions(size=20, fill_nonfinite=0.0)
    images = load_calibration_images(src, count=512, options=options, labels=csv)
    assert len(images) == key.calibration.images == 5  # 4 filled slices and one PNG
    assert key.calibration.clip == calibrate(generate_key(size=20, rank=4), images).calibration.clip
    unused = runner.invoke(app, ["keygen", "--preset", "svd", "--size", "20", "--rank", "4",
                                 "--labels", str(csv), "-o", str(tmp_path / "k3.key")])
    assert unused.exit_code == 2 and "--labels: used only with --calibrate SOURCE" in unused.output
    assert not (tmp_path / "k3.key").exists()
