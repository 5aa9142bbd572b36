"""What a user relies on when a run is cut short or shares its output folder (issue 14).

Each interruption is real: a child process (``tests/interrupt_runner.py``) runs the command line
and is killed with SIGKILL at a chosen point, paused while another run starts, or runs under a
file-size limit. The reruns happen in this process, through the same command line.
"""

from __future__ import annotations

import csv
import json
import math
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medveil.cli import app
from medveil.keys import Key
from medveil.store import ObfuscatedStore
from medveil.synthetic.write import write_dataset

RUNNER = Path(__file__).with_name("interrupt_runner.py")
runner = CliRunner()

# Wall-clock and machine fields: everything else of two equivalent runs must be equal.
TIMING_KEYS = frozenset({
    "seconds", "wall_time_s", "eta_s", "train_seconds", "ms_per_image", "images_per_second",
    "started", "finished", "created",
})


def child(*args: object, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUNNER), *(str(a) for a in args)],
        capture_output=True, text=True, timeout=timeout, **kwargs,
    )


def spawn(*args: object, **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(RUNNER), *(str(a) for a in args)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs,
    )


def invoke(*args: object) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, (list, tuple)):
        return [without_timings(v) for v in value]
    return value


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Exact equality of nested checkpoints: tensors bit for bit, timings left out."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert set(a) - TIMING_KEYS == set(b) - TIMING_KEYS, where
        for key in set(a) - TIMING_KEYS:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as handle:
        return [without_timings(row) for row in csv.DictReader(handle)]


# --- train -------------------------------------------------------------------------------------


def test_train_killed_mid_epoch_resumes_to_bit_identical_weights_and_metrics(tmp_path):
    data = tmp_path / "data"
    write_dataset("ovary-us", data, per_class=6, size=32, seed=1)
    args = ["train", data, "--epochs", 3, "--input-size", 16, "--batch-size", 4,
            "--device", "cpu", "--seed", 7, "--patience", 0]
    killed, reference = tmp_path / "killed", tmp_path / "reference"

    cut = child("kill-train", "2:1", "--", *args, "-o", killed)
    assert cut.returncode == -signal.SIGKILL, cut.stdout + cut.stderr
    # Killed in the middle of epoch 2: epoch 1's checkpoint is whole, nothing of epoch 2 is.
    assert len(history(killed)) == 1
    assert torch.load(killed / "last.pt", weights_only=True)["epoch"] == 1
    assert not list(killed.glob(".*.tmp"))

    invoke(*args, "-o", killed, "--resume")
    invoke(*args, "-o", reference)
    assert len(history(reference)) == 3 and history(killed) == history(reference)
    for name in ("best.pt", "last.pt"):
        assert_identical(
            torch.load(killed / name, weights_only=True),
            torch.load(reference / name, weights_only=True),
            name,
        )
    metrics = [
        json.loads(invoke("evaluate", run, "--data", data, "--device", "cpu", "--json").stdout)
        for run in (killed, reference)
    ]
    assert metrics[0] == metrics[1] and metrics[0]["count"] > 0


# --- study -------------------------------------------------------------------------------------

# As small as the study allows: 6 images a class at 16 px, two epochs, one cheap attack.
TINY_STUDY = [
    "data.per_class=6", "data.image_size=32", "obfuscation.size=16", "obfuscation.rank=4",
    "obfuscation.calibration_images=8", "training.models=[smallcnn]", "training.epochs=2",
    "training.input_size=16", "training.batch_size=4", "sweep.ranks=[]", "privacy.victims=2",
    "privacy.public=4", "privacy.pairs=[2]", "privacy.threats=[A1]",
    "privacy.attacks=[mean_image]", "privacy.decoder_steps=1", "privacy.mda_steps=1",
    "efficiency.images=4", "efficiency.repeats=1", "device=cpu",
    "presets=[svd,multistage]",  # the default's third preset would add time, not coverage
]


def test_study_killed_mid_stage_resumes_at_that_stage_with_the_same_report(
    tmp_path, monkeypatch
):
    sys.path.insert(0, str(RUNNER.parent))
    try:
        from interrupt_runner import FIXED_NOISE_KEY
    finally:
        sys.path.remove(str(RUNNER.parent))
    import medveil.stages

    # Both runs must draw the same noise for their numbers to be comparable (keys stay random).
    monkeypatch.setattr(medveil.stages, "secrets", type("S", (), {
        "randbits": staticmethod(lambda bits: FIXED_NOISE_KEY)
    }))
    run, copy, keys = tmp_path / "run", tmp_path / "uninterrupted", tmp_path / "keys"
    settings = [a for s in TINY_STUDY for a in ("--set", s)]
    command = ["study", "--quick", *settings, "-o", run, "--keys", keys]

    # SIGKILL in the middle of the train stage, half-way through the plaintext model's epoch 2.
    cut = child("kill-study", "training smallcnn on plaintext: epoch 2/2 step 2/", "--fixed-noise",
                "--", *command)
    assert cut.returncode == -signal.SIGKILL, cut.stdout + cut.stderr
    steps = json.loads((run / "steps.json").read_text())
    assert set(steps) == {"data", "keys", "obfuscate", "pipeline", "efficiency"}
    assert (run / "train" / "plaintext" / "smallcnn" / "last.pt").is_file()

    # The reference: the same study (same keys, same finished stages) with the train stage
    # not yet begun, so that it runs from its start to the end uninterrupted.
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "train")

    store_files = {p: p.stat().st_mtime_ns for p in (run / "stores").rglob("*") if p.is_file()}
    import medveil.study.run

    trained = []
    original_train = medveil.study.run.train

    def spy(data, *, run_dir, resume, **kwargs):
        trained.append((run_dir.parent.name, resume))
        return original_train(data, run_dir=run_dir, resume=resume, **kwargs)

    monkeypatch.setattr(medveil.study.run, "train", spy)
    invoke(*command)
    # Resumed at the train stage, from the plaintext model's epoch-1 checkpoint.
    assert trained == [("plaintext", True), ("svd", False), ("multistage", False)]
    done = json.loads((run / "steps.json").read_text())
    assert {k: done[k] for k in steps} == steps  # the finished stages were not redone
    assert {p: p.stat().st_mtime_ns for p in store_files} == store_files
    trained.clear()
    invoke("study", "--quick", *settings, "-o", copy, "--keys", keys)
    assert trained == [("plaintext", False), ("svd", False), ("multistage", False)]

    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run, copy))
    assert len(ours["utility"]) == 3 and ours["privacy"]
    assert without_timings(ours) == without_timings(theirs)


# --- two writers, one folder -------------------------------------------------------------------


@pytest.fixture
def dataset_and_key(tmp_path):
    data = tmp_path / "data"
    write_dataset("ovary-us", data, per_class=6, size=40, seed=2)
    invoke("keygen", "--preset", "svd", "--size", 32, "--rank", 4, "-o", tmp_path / "k.key")
    return data, tmp_path / "k.key"


def test_a_second_obfuscate_into_the_same_folder_refuses_and_the_store_stays_valid(
    tmp_path, dataset_and_key
):
    data, key = dataset_and_key
    out, signals = tmp_path / "store", tmp_path / "signals"
    signals.mkdir()
    command = ["obfuscate", data, "--key", key, "-o", out, "--device", "cpu",
               "--files-per-shard", 4]

    first = spawn("pause-obfuscate", signals, "--", *command)
    try:
        _wait_for(signals / "ready", first)
        assert (out / ".medveil.lock").is_file()
        second = runner.invoke(app, [str(a) for a in command])
        assert second.exit_code == 1
        assert "another medveil run is writing into this folder right now" in second.output
        (signals / "go").touch()
        output, _ = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, output
    store = ObfuscatedStore(out)  # verified: sizes and checksums of every shard
    assert len(store.split("all")) == 12
    assert not (out / ".medveil.lock").exists()


def test_a_lock_left_by_a_crashed_run_is_stale(tmp_path, dataset_and_key):
    data, key = dataset_and_key
    out, signals = tmp_path / "store", tmp_path / "signals"
    signals.mkdir()
    command = ["obfuscate", data, "--key", key, "-o", out, "--device", "cpu"]
    crashed = spawn("pause-obfuscate", signals, "--", *command)
    try:
        _wait_for(signals / "ready", crashed)
    finally:
        crashed.send_signal(signal.SIGKILL)
        crashed.communicate(timeout=60)
    assert (out / ".medveil.lock").is_file()  # left behind: nobody removed it
    invoke(*command)
    assert len(ObfuscatedStore(out).split("all")) == 12
    assert not (out / ".medveil.lock").exists()


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the child ended early:\n{process.communicate()[0]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.02)


# --- a write that fails half-way ---------------------------------------------------------------


def _file_size_limit(limit: int) -> Any:
    def apply() -> None:
        # Ignored, SIGXFSZ lets the write fail with EFBIG instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_write_that_fails_half_way_leaves_no_file_and_a_rerun_resumes(
    tmp_path, dataset_and_key
):
    data, key = dataset_and_key
    # A 12-page TIFF makes one shard far larger than the others (each page is an image).
    pages = [Image.fromarray(np.uint8(np.outer(np.arange(40), np.ones(40)) * 6 + i))
             for i in range(12)]
    pages[0].save(data / "notinfected" / "zz-stack.tif", save_all=True, append_images=pages[1:])
    out = tmp_path / "store"
    command = ["obfuscate", data, "--key", key, "-o", out, "--device", "cpu",
               "--files-per-shard", 2]
    # Room for a shard of 2 images, not for one of 13.
    per_image = 4 * math.prod(Key.load(key).params.out_shape)
    limited = child("none", "--", *command, preexec_fn=_file_size_limit(128 + 6 * per_image))
    assert limited.returncode == 1, limited.stdout + limited.stderr
    message = " ".join(limited.stderr.split())
    assert "all/images-00006.npy: cannot write (File too large); nothing was left under that " \
           "name" in message, message
    assert "Traceback" not in limited.stderr
    # Nothing under a final name for the shard that failed, no temporary left, no manifest.
    assert sorted(p.name for p in (out / "all").iterdir()) == sorted(
        f"{kind}-{i:05d}.{ext}" for i in range(6)
        for kind, ext in (("images", "npy"), ("labels", "npy"), ("groups", "npy"), ("shard", "json"))
    )
    assert not (out / "manifest.json").exists()
    assert not list(out.rglob("*.tmp")) and not (out / ".medveil.lock").exists()

    rerun = invoke(*command)
    assert "resumed after 6 finished shard(s)" in " ".join(rerun.output.split())
    assert len(ObfuscatedStore(out).split("all")) == 12 + 12
