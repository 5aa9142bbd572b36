"""The Ray engine writes the store the local engine writes (skipped where Ray is not installed).

One local Ray instance with two CPUs serves the whole module; its workers import medveil from
this checkout (``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import smooth_images, write_png_folder
from medveil.calibration import calibrate
from medveil.errors import ImageLoadError, InvalidKeyError
from medveil.keys import generate_key
from medveil.obfuscate import obfuscate_dataset
from medveil.store import ObfuscatedStore

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
from medveil.obfuscate_ray import RayEngine  # noqa: E402

SIZE = 32
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def local_ray():
    path = os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(
        num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_png_folder(root, classes=("a", "b"), per_class=9, seed=3)
    return root


def _save(key, tmp_path: Path, name: str) -> Path:
    return key.save(tmp_path / "keys" / name)


def _bytes(store: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*.npy")) + sorted(store.rglob("*.json"))
        if p.name != "manifest.json"
    }


def test_svd_store_from_the_cli_equals_the_local_engines_byte_for_byte(
    local_ray, folder, tmp_path
) -> None:
    from typer.testing import CliRunner

    from medveil.cli import app

    key = generate_key(preset="svd", size=SIZE, rank=5)
    key_file = _save(key, tmp_path, "svd.key")
    cli = CliRunner()
    common = [str(folder), "--key", str(key_file), "--files-per-shard", "4", "--keep-names"]
    made = cli.invoke(app, ["obfuscate", *common, "-o", str(tmp_path / "ray"), "--engine", "ray"])
    assert made.exit_code == 0, made.output
    assert "18 images" in made.output
    local = obfuscate_dataset(
        folder, key=key, output=tmp_path / "local", files_per_shard=4, keep_names=True,
        device="cpu",
    )
    assert local.images == {"all": 18}
    assert _bytes(tmp_path / "ray") == _bytes(tmp_path / "local")
    manifests = [json.loads((tmp_path / s / "manifest.json").read_text()) for s in ("local", "ray")]
    for m in manifests:
        del m["created"], m["checksum"]  # the time of writing, and a checksum over it
    assert manifests[0] == manifests[1]
    wrong = cli.invoke(
        app, ["obfuscate", *common, "-o", str(tmp_path / "x"), "--address", "auto"]
    )
    assert wrong.exit_code == 2
    assert "needs --engine ray" in wrong.output
    assert not (tmp_path / "x").exists()


def test_multistage_store_matches_in_shape_labels_and_statistics(
    local_ray, folder, tmp_path
) -> None:
    key = calibrate(generate_key(size=SIZE, rank=6), smooth_images(16, SIZE, seed=2))
    key_file = _save(key, tmp_path, "ms.key")
    local = obfuscate_dataset(folder, key=key, output=tmp_path / "local", device="cpu")
    obfuscate_dataset(folder, key=key, output=tmp_path / "ray", engine=RayEngine(key_file))
    a, b = (ObfuscatedStore(tmp_path / s).split("all") for s in ("local", "ray"))
    x, y = a.arrays(range(len(a))), b.arrays(range(len(b)))
    assert x.shape == y.shape == (local.images["all"], SIZE, SIZE)
    assert a.labels.tolist() == b.labels.tolist() == [0] * 9 + [1] * 9
    # Fresh noise per image: not equal, but the same distribution and the same signal.
    assert not np.array_equal(x, y)
    assert abs(float(x.mean()) - float(y.mean())) < 0.05
    assert abs(float(x.std()) - float(y.std())) < 0.05
    corr = [np.corrcoef(u.ravel(), v.ravel())[0, 1] for u, v in zip(x, y)]
    assert min(corr) > 0.5


def test_a_bad_file_stops_the_run(local_ray, tmp_path) -> None:
    root = tmp_path / "data"
    write_png_folder(root, classes=("a", "b"), per_class=3, seed=1)
    (root / "a" / "broken.png").write_bytes(b"not a png")
    key = generate_key(preset="svd", size=SIZE, rank=4)
    engine = RayEngine(_save(key, tmp_path, "k.key"))
    with pytest.raises(ImageLoadError, match="broken.png"):
        obfuscate_dataset(root, key=key, output=tmp_path / "strict", engine=engine)
    assert not (tmp_path / "strict" / "manifest.json").exists()


def test_an_interrupted_run_resumes_and_skips_and_lists_bad_files(
    local_ray, folder, tmp_path
) -> None:
    (folder / "a" / "zz-broken.png").write_bytes(b"not a png")
    key = generate_key(preset="svd", size=SIZE, rank=5)
    engine = RayEngine(_save(key, tmp_path, "k.key"))
    run = dict(key=key, files_per_shard=4, skip_bad=True)
    calls: list[int] = []

    def stop_after_two(files: int) -> None:
        calls.append(files)
        if len(calls) == 2:
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            obfuscate_dataset(
                folder, output=tmp_path / "store", engine=engine, progress=stop_after_two, **run
            )
        result = obfuscate_dataset(folder, output=tmp_path / "store", engine=engine, **run)
        local = obfuscate_dataset(folder, output=tmp_path / "local", device="cpu", **run)
    finally:
        (folder / "a" / "zz-broken.png").unlink()
    assert result.resumed_shards == 2
    assert result.images == local.images == {"all": 18}
    assert _bytes(tmp_path / "store") == _bytes(tmp_path / "local")
    report = json.loads(local.skipped_report.read_text())
    assert [s["path"] for s in report["skipped"]] == ["a/zz-broken.png"]
    resumed = json.loads(result.skipped_report.read_text())
    # Listed by name if its shard was written after the interruption, else counted.
    assert resumed["skipped"] in ([], report["skipped"])
    assert len(resumed["skipped"]) + resumed["skipped_in_resumed_shards"] == 1


def test_a_key_file_that_does_not_hold_the_runs_key_is_refused(folder, tmp_path) -> None:
    key = generate_key(preset="svd", size=SIZE, rank=5)
    other = _save(generate_key(preset="svd", size=SIZE, rank=5), tmp_path, "other.key")
    with pytest.raises(InvalidKeyError, match="does not hold the key"):
        obfuscate_dataset(folder, key=key, output=tmp_path / "s", engine=RayEngine(other))
    assert not (tmp_path / "s" / "manifest.json").exists()

