from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import smooth_images
from medveil.errors import DatasetLayoutError, ImageLoadError, StoreError
from medveil.keys import generate_key
from medveil.layout import scan_dataset
from medveil.obfuscate import obfuscate_dataset
from medveil.store import ObfuscatedStore

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
    return generate_key(size=32, rank=6).calibrate(smooth_images(16, 32, seed=9))


def test_obfuscates_a_folder_into_a_readable_store(tmp_path, key):
    src = write_folder(tmp_path / "data")
    result = obfuscate_dataset(
        src, key=key, output=tmp_path / "store", files_per_shard=5, device="cpu"
    )
    assert result.images == {"all": 12} and not result.skipped
    store = ObfuscatedStore(tmp_path / "store")
    assert store.classes == CLASSES and store.key_fingerprint == key.fingerprint
    m = store.manifest
    assert m["format_version"] == 1 and m["params"]["rank"] == 6
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
    result = obfuscate_dataset(src, key=key, output=tmp_path / "store", skip_bad=True, device="cpu")
    assert result.images == {"all": 12}
    assert sorted(s.path for s in result.skipped) == ["alpha/tiny.png", "beta/empty.png"]
    report = json.loads((tmp_path / "store.skipped.json").read_text())
    assert len(report["skipped"]) == 2 and "smaller" in json.dumps(report)
    assert ObfuscatedStore(tmp_path / "store").manifest["splits"]["all"]["skipped"] == 2


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
    other = generate_key(size=32, rank=6).calibrate(smooth_images(8, 32))
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
    other = generate_key(size=32, rank=6).calibrate(smooth_images(8, 32))
    with pytest.raises(StoreError, match="all/notes.txt"):
        obfuscate_dataset(src, key=other, output=out, device="cpu")
    # Fewer, larger shards this time: the old third shard must go, the user's note must stay.
    obfuscate_dataset(src, key=other, output=out, overwrite=True, files_per_shard=8, device="cpu")
    names = sorted(p.name for p in (out / "all").iterdir())
    assert names == ["images-00000.npy", "labels-00000.npy", "notes.txt", "shard-00000.json"]
    assert ObfuscatedStore(out).key_fingerprint == other.fingerprint


def test_an_incomplete_store_with_another_plan_keeps_foreign_files(tmp_path, key):
    src = write_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "store"
    obfuscate_dataset(src, key=key, output=out, files_per_shard=3, device="cpu")
    (out / "manifest.json").unlink()  # as if the run had been killed before finishing
    (out / "keep.md").write_text("mine")
    other = generate_key(size=32, rank=6).calibrate(smooth_images(8, 32))
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
