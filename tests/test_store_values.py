"""Store contents, not counts: a resumed or restarted store holds exactly the obfuscation of
its inputs under the key and settings of the run that finished it.

Keys here have no noise, so the obfuscation is a deterministic function of the image and the
stored arrays can be compared with :class:`~medveil.obfuscator.Obfuscator` exactly (a pinned
noise stream restarts at a resumption, so it would not give the same draws).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from conftest import smooth_images, write_png_folder
from medveil.calibration import calibrate
from medveil.keys import Key, SchemeParams
from medveil.loading import LoadOptions, load_image
from medveil.obfuscate import obfuscate_dataset
from medveil.obfuscator import Obfuscator
from medveil.store import ObfuscatedStore

SIZE = 32
CLASSES = ("alpha", "beta")


def noiseless_key(label: str) -> Key:
    params = SchemeParams(preset="multistage", size=SIZE, rank=6, noise=0.0)
    key = Key(secret=hashlib.sha256(label.encode()).digest(), params=params)
    return calibrate(key, smooth_images(16, SIZE, seed=9))


@pytest.fixture(scope="module")
def keys() -> tuple[Key, Key]:
    return noiseless_key("first"), noiseless_key("second")


def write_folder(root, *, per_class: int) -> list:
    """PNG files in class folders; returns them in the store's order (class, then name)."""
    return write_png_folder(
        root, classes=CLASSES, per_class=per_class, seed=4, name="scan-{:03d}.png"
    )


def expected_arrays(files, key: Key, options: LoadOptions) -> np.ndarray:
    x = np.stack([load_image(f, options=options) for f in files])
    return Obfuscator(key)(x)


def stored_arrays(store) -> tuple[np.ndarray, list[int]]:
    split = ObfuscatedStore(store).split("all")
    return split.arrays(range(len(split))), split.labels.tolist()


def interrupt_after(shards: int):
    seen: list[int] = []

    def progress(n: int) -> None:
        seen.append(n)
        if len(seen) == shards:
            raise KeyboardInterrupt

    return progress


def test_a_resumed_store_holds_the_same_arrays_as_an_uninterrupted_one(tmp_path, keys) -> None:
    key = keys[0]
    files = write_folder(tmp_path / "data", per_class=5)
    run = dict(key=key, files_per_shard=3, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        obfuscate_dataset(
            tmp_path / "data", output=tmp_path / "cut", progress=interrupt_after(2), **run
        )
    resumed = obfuscate_dataset(tmp_path / "data", output=tmp_path / "cut", **run)
    assert resumed.resumed_shards == 2
    obfuscate_dataset(tmp_path / "data", output=tmp_path / "whole", **run)
    cut, cut_labels = stored_arrays(tmp_path / "cut")
    whole, whole_labels = stored_arrays(tmp_path / "whole")
    np.testing.assert_array_equal(cut, whole)
    assert cut_labels == whole_labels == [0] * 5 + [1] * 5
    np.testing.assert_allclose(
        cut, expected_arrays(files, key, LoadOptions(size=SIZE)), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("change", ["key", "load options", "shard size"])
def test_an_incomplete_store_with_another_plan_is_restarted_not_resumed(
    tmp_path, keys, change
) -> None:
    first, second = keys
    files = write_folder(tmp_path / "data", per_class=5)
    before = dict(key=first, files_per_shard=3, device="cpu", options=LoadOptions(size=SIZE))
    after = dict(before)
    if change == "key":
        after["key"] = second
    elif change == "load options":
        after["options"] = LoadOptions(size=SIZE, percentile=(5.0, 95.0))
    else:
        after["files_per_shard"] = 4
    with pytest.raises(KeyboardInterrupt):
        obfuscate_dataset(
            tmp_path / "data", output=tmp_path / "store", progress=interrupt_after(2), **before
        )
    assert not (tmp_path / "store" / "manifest.json").exists()
    result = obfuscate_dataset(tmp_path / "data", output=tmp_path / "store", **after)
    assert result.resumed_shards == 0
    arrays, labels = stored_arrays(tmp_path / "store")
    assert labels == [0] * 5 + [1] * 5
    want = expected_arrays(files, after["key"], after["options"])
    np.testing.assert_allclose(arrays, want, rtol=0, atol=1e-5)
    if change != "shard size":  # the first run's arrays differ from these
        stale = expected_arrays(files[:6], before["key"], before["options"])
        assert np.abs(arrays[:6] - stale).max() > 0.1
    store = ObfuscatedStore(tmp_path / "store")
    assert store.key_fingerprint == after["key"].fingerprint
    shards = store.manifest["splits"]["all"]["shards"]
    assert [s["count"] for s in shards] == ([4, 4, 2] if change == "shard size" else [3, 3, 3, 1])
