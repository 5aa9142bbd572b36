from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import smooth_images
from medveil.calibration import calibrate
from medveil.errors import DatasetLayoutError, ImageLoadError, StoreError
from medveil.keys import generate_key
from medveil.layout import scan_dataset
from medveil.loading import LoadOptions
from medveil.obfuscate import obfuscate_dataset
from medveil.store import ObfuscatedStore, StoreBusyError, StoreWriter, manifest_checksum

CLASSES = ("alpha", "beta")


def write_folder(root, *, per_class=6, size=40, splits=None, seed=0):
    images = smooth_images(
        per_class * len(CLASSES) * (len(splits) if splits else 1), size, seed=seed
    )
    i = 0
    for split in splits or [None]:
        for name in CLASSES:
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(per_class):
                Image.fromarray((images[i] * 255).astype(np.uint8)).save(
                    folder / f"patient-{i:03d}.png"
                )
                i += 1
    return root


@pytest.fixture(scope="module")
def key():
    return calibrate(generate_key(size=32, rank=6), smooth_images(16, 32, seed=9))


def test_obfuscates_a_folder_into_a_readable_store(tmp_path, key):
    src = write_folder(tmp_path / "data")
    result = obfuscate_dataset(
        src, key=key, output=tmp_path / "store", files_per_shard=5, device="cpu"
    )
    assert result.images == {"all": 12} and not result.skipped
    store = ObfuscatedStore(tmp_path / "store")
    assert store.classes == CLASSES and store.key_fingerprint == key.fingerprint
    m = store.manifest
    assert m["format_version"] == 2 and m["params"]["rank"] == 6
    assert m["splits"]["all"]["per_class"] == {"alpha": 6, "beta": 6}
    split = store.split("all")
    assert len(split) == 12 and split.labels.tolist() == [0] * 6 + [1] * 6
    x, y = split[7]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y == 1
    batch, labels = next(iter(DataLoader(split, batch_size=12, shuffle=True, num_workers=2)))
    assert batch.shape == (12, 1, 32, 32) and sorted(labels.tolist()) == [0] * 6 + [1] * 6
    # No source names or absolute paths anywhere in the store.
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file() and path.suffix == ".json":
            text = path.read_text()
            assert "patient-" not in text and str(tmp_path) not in text


def test_store_arrays_are_the_obfuscation_of_the_images(tmp_path, key):
    from medveil.loading import LoadOptions, load_image
    from medveil.obfuscator import Obfuscator

    src = write_folder(tmp_path / "data", per_class=2)
    obfuscate_dataset(src, key=key, output=tmp_path / "store", noise_seed=5, device="cpu")
    split = ObfuscatedStore(tmp_path / "store").split("all")
    files = sorted((src / "alpha").glob("*.png")) + sorted((src / "beta").glob("*.png"))
    x = np.stack([load_image(f, options=LoadOptions(size=32)) for f in files])
    expected = Obfuscator(key, noise_seed=5)(x)
    np.testing.assert_allclose(split.arrays(range(4)), expected, atol=1e-4)


def test_split_folders_and_keep_names(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=3, splits=["Training", "Testing"])
    obfuscate_dataset(src, key=key, output=tmp_path / "store", keep_names=True, device="cpu")
    store = ObfuscatedStore(tmp_path / "store")
    assert store.splits == ("train", "test")
    assert store.names("test")[0].startswith("Testing/alpha/patient-")


def test_bad_file_stops_the_run_naming_it_and_leaves_no_complete_store(tmp_path, key):
    src = write_folder(tmp_path / "data")
    (src / "beta" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageLoadError, match="broken.png"):
        obfuscate_dataset(src, key=key, output=tmp_path / "store", device="cpu")
    assert not (tmp_path / "store" / "manifest.json").exists()
    with pytest.raises(StoreError, match="incomplete"):
        ObfuscatedStore(tmp_path / "store")


def test_skip_bad_lists_bad_files_outside_the_store(tmp_path, key):
    src = write_folder(tmp_path / "data")
    (src / "beta" / "empty.png").write_bytes(b"")
    (src / "alpha" / "tiny.png").parent.mkdir(exist_ok=True)
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(src / "alpha" / "tiny.png")
    result = obfuscate_dataset(
        src, key=key, output=tmp_path / "store", skip_bad=True, device="cpu",
        options=LoadOptions(size=32, min_size=16),
    )
    assert result.images == {"all": 12}
    assert sorted(s.path for s in result.skipped) == ["alpha/tiny.png", "beta/empty.png"]
    report = json.loads((tmp_path / "store.skipped.json").read_text())
    assert report["skipped"] == [
        {"path": "alpha/tiny.png", "problem": "image is 8x8 pixels, smaller than the minimum "
         "size 16x16 (--min-size)"},
        {"path": "beta/empty.png", "problem": "file is empty"},
    ]
    assert ObfuscatedStore(tmp_path / "store").manifest["splits"]["all"]["skipped"] == 2


def test_small_images_are_upscaled_and_counted(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=3, size=40, splits=["Training", "Testing"])
    small = smooth_images(3, 20, seed=4)
    for i, image in enumerate(small):
        Image.fromarray((image * 255).astype(np.uint8)).save(src / "Testing" / "beta" / f"s{i}.png")
    result = obfuscate_dataset(src, key=key, output=tmp_path / "store", device="cpu")
    assert result.images == {"train": 6, "test": 9} and result.upscaled == 3
    assert "3 image(s) smaller than 32x32 upscaled" in result.summary()
    splits = ObfuscatedStore(tmp_path / "store").manifest["splits"]
    assert splits["test"]["upscaled"] == 3 and splits["train"]["upscaled"] == 0
    again = obfuscate_dataset(src, key=key, output=tmp_path / "store", device="cpu")
    assert again.already_complete and again.upscaled == 3


def test_interrupted_run_resumes_and_a_rerun_of_a_complete_store_does_nothing(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=10)
    seen = []

    def interrupt(n):
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        obfuscate_dataset(
            src,
            key=key,
            output=tmp_path / "store",
            files_per_shard=4,
            progress=interrupt,
            device="cpu",
        )
    assert not (tmp_path / "store" / "manifest.json").exists()
    (tmp_path / "store" / "all" / ".images-00009.npy.stale.tmp").write_bytes(b"partial")
    result = obfuscate_dataset(
        src, key=key, output=tmp_path / "store", files_per_shard=4, device="cpu"
    )
    assert result.resumed_shards == 2 and result.images == {"all": 20}
    assert not list((tmp_path / "store").rglob("*.tmp"))
    assert ObfuscatedStore(tmp_path / "store").split("all").labels.tolist() == [0] * 10 + [1] * 10
    again = obfuscate_dataset(
        src, key=key, output=tmp_path / "store", files_per_shard=4, device="cpu"
    )
    assert again.already_complete


def test_changed_inputs_restart_an_incomplete_store_and_refuse_a_complete_one(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=4)
    obfuscate_dataset(src, key=key, output=tmp_path / "store", device="cpu")
    other = calibrate(generate_key(size=32, rank=6), smooth_images(8, 32))
    with pytest.raises(StoreError, match="complete store"):
        obfuscate_dataset(src, key=other, output=tmp_path / "store", device="cpu")
    result = obfuscate_dataset(
        src, key=other, output=tmp_path / "store", overwrite=True, device="cpu"
    )
    assert ObfuscatedStore(tmp_path / "store").key_fingerprint == other.fingerprint
    assert result.images == {"all": 8}


def test_refuses_a_foreign_non_empty_output_folder(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=2)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a medveil output"):
        obfuscate_dataset(src, key=key, output=tmp_path / "mine", device="cpu")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("marker", [b"", b"medveil study\n"])
def test_a_marked_folder_with_other_content_is_never_emptied(tmp_path, key, marker):
    # A study run folder (or an old store folder) that holds a user's files: obfuscating into it
    # used to delete everything but the marker.
    src = write_folder(tmp_path / "data", per_class=2)
    out = tmp_path / "run"
    (out / "results").mkdir(parents=True)
    (out / ".medveil-output").write_bytes(marker)
    (out / "precious.txt").write_text("precious")
    (out / "results" / "r.csv").write_text("a,b\n1,2\n")
    before = _tree(out)
    with pytest.raises(StoreError, match="--overwrite") as info:
        obfuscate_dataset(src, key=key, output=out, device="cpu")
    assert "precious.txt" in str(info.value) and "results/" in str(info.value)
    assert _tree(out) == before and (out / "precious.txt").read_text() == "precious"
    # With overwrite the store is written beside them, and they are kept.
    obfuscate_dataset(src, key=key, output=out, overwrite=True, device="cpu")
    assert (out / "precious.txt").read_text() == "precious"
    assert (out / "results" / "r.csv").read_text() == "a,b\n1,2\n"
    assert len(ObfuscatedStore(out).split("all")) == 4
    assert (out / ".medveil-output").read_bytes() == (marker or b"medveil store\n")


def test_replacing_a_store_deletes_only_its_own_files(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "store"
    obfuscate_dataset(src, key=key, output=out, files_per_shard=3, device="cpu")
    assert (out / ".medveil-output").read_text() == "medveil store\n"
    shards_before = sorted(p.name for p in (out / "all").iterdir())
    assert "images-00002.npy" in shards_before
    (out / "all" / "notes.txt").write_text("mine")
    other = calibrate(generate_key(size=32, rank=6), smooth_images(8, 32))
    with pytest.raises(StoreError, match="all/notes.txt"):
        obfuscate_dataset(src, key=other, output=out, device="cpu")
    # Fewer, larger shards this time: the old third shard must go, the user's note must stay.
    obfuscate_dataset(src, key=other, output=out, overwrite=True, files_per_shard=8, device="cpu")
    names = sorted(p.name for p in (out / "all").iterdir())
    assert names == [
        "groups-00000.npy", "images-00000.npy", "labels-00000.npy", "notes.txt", "shard-00000.json"
    ]
    assert ObfuscatedStore(out).key_fingerprint == other.fingerprint


def test_an_incomplete_store_with_another_plan_keeps_foreign_files(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "store"
    obfuscate_dataset(src, key=key, output=out, files_per_shard=3, device="cpu")
    (out / "manifest.json").unlink()  # as if the run had been killed before finishing
    (out / "keep.md").write_text("mine")
    other = calibrate(generate_key(size=32, rank=6), smooth_images(8, 32))
    with pytest.raises(StoreError, match="keep.md"):
        obfuscate_dataset(src, key=other, output=out, device="cpu")
    assert (out / "keep.md").read_text() == "mine"
    assert (out / "all" / "images-00000.npy").is_file()


def test_layout_errors_are_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="empty folder"):
        scan_dataset(tmp_path / "empty")
    (tmp_path / "loose").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "loose" / "a.png")
    with pytest.raises(DatasetLayoutError, match="one sub-folder per class"):
        scan_dataset(tmp_path / "loose")
    (tmp_path / "mixed" / "Training" / "a").mkdir(parents=True)
    (tmp_path / "mixed" / "other").mkdir()
    with pytest.raises(DatasetLayoutError, match="mixes split folders"):
        scan_dataset(tmp_path / "mixed")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="no files"):
        scan_dataset(tmp_path / "noimg")
    with pytest.raises(DatasetLayoutError, match="no such folder"):
        scan_dataset(tmp_path / "absent")


# --- file names, links and odd entries in the input ------------------------------------------


def test_non_utf8_names_are_kept_losslessly_and_reported_readably(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=2)
    raw = os.fsencode(src / "alpha") + b"/caf\xe9-\xff.png"  # Latin-1 bytes, not UTF-8
    Image.fromarray((smooth_images(1, 40)[0] * 255).astype(np.uint8)).save(os.fsdecode(raw))
    bad = os.fsencode(src / "beta") + b"/\xfe\xfdbroken.png"
    with open(bad, "wb") as handle:
        handle.write(b"not an image")
    with pytest.raises(ImageLoadError) as info:
        obfuscate_dataset(src, key=key, output=tmp_path / "strict", device="cpu")
    assert str(info.value) == "beta/\\xfe\\xfdbroken.png: " + info.value.problem
    result = obfuscate_dataset(
        src, key=key, output=tmp_path / "store", skip_bad=True, keep_names=True, device="cpu"
    )
    assert result.images == {"all": 5}
    report = json.loads((tmp_path / "store.skipped.json").read_text())
    [skipped] = report["skipped"]
    assert skipped["path"] == "beta/\\xfe\\xfdbroken.png"
    assert bytes.fromhex(skipped["path_bytes_hex"]) == b"beta/\xfe\xfdbroken.png"
    names = ObfuscatedStore(tmp_path / "store").names("all")
    assert os.fsencode(names[0]) == b"alpha/caf\xe9-\xff.png"
    assert names[1:] == ["alpha/patient-000.png", "alpha/patient-001.png",
                         "beta/patient-002.png", "beta/patient-003.png"]
    assert ObfuscatedStore(tmp_path / "store").display_names("all")[0] == "alpha/caf\\xe9-\\xff.png"
    stored = json.loads((tmp_path / "store" / "all" / "names-00000.json").read_text())
    assert stored[0] == {"path_bytes_hex": b"alpha/caf\xe9-\xff.png".hex()}


def test_links_loops_and_empty_image_named_folders_are_listed_not_dropped(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=2)
    (src / "alpha" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (src / "alpha" / "loop.png").symlink_to(src / "alpha" / "loop.png")
    (src / "beta" / "scan.png").mkdir()
    (src / "beta" / "linked").symlink_to(src / "alpha")
    (src / "beta" / "series").mkdir()  # an ordinary sub-folder is searched, not listed
    Image.fromarray((smooth_images(1, 40)[0] * 255).astype(np.uint8)).save(
        src / "beta" / "series" / "one.png"
    )
    index = scan_dataset(src)
    listed = [item.path.as_posix() for item in index.splits["all"]]
    assert listed == [
        "alpha/gone.png", "alpha/loop.png", "alpha/patient-000.png", "alpha/patient-001.png",
        "beta/linked", "beta/patient-002.png", "beta/patient-003.png", "beta/scan.png",
        "beta/series/one.png",
    ]
    with pytest.raises(ImageLoadError, match=r"^alpha/gone\.png: broken symbolic link"):
        obfuscate_dataset(src, key=key, output=tmp_path / "strict", device="cpu")
    result = obfuscate_dataset(src, key=key, output=tmp_path / "store", skip_bad=True, device="cpu")
    assert result.images == {"all": 5}
    problems = {s.path: s.problem for s in result.skipped}
    assert problems == {
        "alpha/gone.png": f"broken symbolic link (its target {tmp_path / 'nowhere.png'} does "
        "not exist)",
        "alpha/loop.png": "symbolic link loop (following the link leads back to itself)",
        "beta/linked": "symbolic link to a folder; linked folders are not followed (they can "
        "loop)",
        "beta/scan.png": "is a folder, not an image file",
    }


def test_a_non_utf8_class_folder_is_refused_by_name(tmp_path):
    write_folder(tmp_path / "data", per_class=1)
    os.mkdir(os.fsencode(tmp_path / "data") + b"/gr\xfcn")
    with pytest.raises(DatasetLayoutError, match=r"gr\\xfcn: folder name is not valid UTF-8"):
        scan_dataset(tmp_path / "data")


# --- integrity of a written store --------------------------------------------------------------


@pytest.fixture
def store(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=4)
    obfuscate_dataset(
        src, key=key, output=tmp_path / "store", files_per_shard=3, keep_names=True, device="cpu"
    )
    return tmp_path / "store"


def _edit_manifest(store, change):
    path = store / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_manifest_records_sizes_and_checksums(store):
    manifest = ObfuscatedStore(store).manifest
    shard = manifest["splits"]["all"]["shards"][1]
    data = (store / "all" / "images-00001.npy").read_bytes()
    assert shard["bytes"]["images"] == len(data)
    assert shard["sha256"]["images"] == hashlib.sha256(data).hexdigest()
    assert set(shard["sha256"]) == {"images", "labels", "groups", "names"}
    assert manifest["checksum"] == manifest_checksum(manifest)


def test_a_truncated_shard_is_refused_naming_it(store):
    path = store / "all" / "images-00001.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(StoreError, match=r"shard file all/images-00001\.npy is \d+ bytes, the "
                       r"manifest records \d+ \(truncated"):
        ObfuscatedStore(store)


def test_a_shard_with_flipped_bytes_is_refused_naming_it(store):
    path = store / "all" / "labels-00002.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"all/labels-00002\.npy does not match its SHA-256"):
        ObfuscatedStore(store)


def test_an_edited_manifest_is_refused(store):
    _edit_manifest(store, lambda m: m["splits"]["all"]["shards"][0].update(count=2))
    with pytest.raises(StoreError, match=r"all/images-00000\.npy holds float32 \(3, 32, 32\), "
                       r"the manifest says float32 \(2, 32, 32\)"):
        ObfuscatedStore(store)
    _edit_manifest(store, lambda m: m["splits"]["all"]["shards"][0].update(count=3))
    ObfuscatedStore(store)  # restored
    _edit_manifest(store, lambda m: m.update(classes=["beta", "alpha"]))
    with pytest.raises(StoreError, match="manifest was changed after it was written"):
        ObfuscatedStore(store)


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../elsewhere/labels.npy", "all/../../labels-00000.npy"]
)
def test_shard_paths_must_stay_inside_the_store(store, path):
    _edit_manifest(store, lambda m: m["splits"]["all"]["shards"][0].update(labels=path))
    with pytest.raises(StoreError, match="leaves the store"):
        ObfuscatedStore(store)


def test_a_shard_path_through_a_link_out_of_the_store_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "labels-00000.npy").write_bytes((store / "all" / "labels-00000.npy").read_bytes())
    (store / "elsewhere").symlink_to(outside)
    _edit_manifest(
        store, lambda m: m["splits"]["all"]["shards"][0].update(labels="elsewhere/labels-00000.npy")
    )
    with pytest.raises(StoreError, match="outside the store"):
        ObfuscatedStore(store)


def test_a_version_1_store_without_checksums_is_still_read(store):
    def as_v1(m):
        m["format_version"] = 1
        del m["checksum"]
        for shard in m["splits"]["all"]["shards"]:
            del shard["bytes"], shard["sha256"]

    _edit_manifest(store, as_v1)
    assert len(ObfuscatedStore(store).split("all")) == 8
    # Its sizes are still checked against the arrays' headers.
    path = store / "all" / "images-00002.npy"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(StoreError, match=r"all/images-00002\.npy is \d+ bytes, its header needs"):
        ObfuscatedStore(store)


# --- one writer at a time ------------------------------------------------------------------------


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=2)
    out = tmp_path / "store"
    holder = StoreWriter(out, plan={"a": 1})
    try:
        with pytest.raises(StoreBusyError, match=r"another medveil run is writing into this "
                           r"folder right now \(it holds \.medveil\.lock\)"):
            obfuscate_dataset(src, key=key, output=out, device="cpu")
    finally:
        holder.close()
    assert not (out / ".medveil.lock").exists()
    result = obfuscate_dataset(src, key=key, output=out, device="cpu")
    assert result.images == {"all": 4} and not (out / ".medveil.lock").exists()
    assert len(ObfuscatedStore(out).split("all")) == 4


def test_a_failed_run_releases_the_lock_and_keeps_its_finished_shards(tmp_path, key):
    src = write_folder(tmp_path / "bad", per_class=1)
    (src / "alpha" / "x.png").write_bytes(b"")
    out = tmp_path / "store"
    with pytest.raises(ImageLoadError, match=r"^alpha/x\.png: file is empty"):
        obfuscate_dataset(src, key=key, output=out, files_per_shard=1, device="cpu")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        ".medveil-output", ".plan.json", "all", "all/groups-00000.npy", "all/images-00000.npy",
        "all/labels-00000.npy", "all/shard-00000.json",
    ]
    # The same command again resumes after the finished shard (and stops at the same file).
    before = (out / "all" / "images-00000.npy").stat().st_mtime_ns
    with pytest.raises(ImageLoadError, match=r"^alpha/x\.png: file is empty"):
        obfuscate_dataset(src, key=key, output=out, files_per_shard=1, device="cpu")
    assert (out / "all" / "images-00000.npy").stat().st_mtime_ns == before
    assert not (out / ".medveil.lock").exists()


def test_an_unexpected_loader_error_names_the_file(tmp_path, key, monkeypatch):
    import medveil.engine

    src = write_folder(tmp_path / "data", per_class=1)

    def broken(path, *, options):
        raise MemoryError("out of memory")

    monkeypatch.setattr(medveil.engine, "load_file", broken)
    with pytest.raises(MemoryError) as info:
        obfuscate_dataset(src, key=key, output=tmp_path / "store", device="cpu")
    assert info.value.__notes__ == ["while loading alpha/patient-000.png"]
    assert not (tmp_path / "store" / ".medveil.lock").exists()
