"""The shell commands checked by the values they print and write.

An ``svd`` key has no noise, so everything the commands compute is a deterministic function of
the inputs and can be recomputed through another path: the predicted class of each image by
the library, the store's arrays by :class:`~medveil.obfuscator.Obfuscator`, the evaluation's
accuracy from per-image predictions of the plaintext files the store names.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_png_folder
from medveil.cli import app
from medveil.errors import StoreError
from medveil.keys import Key
from medveil.loading import LoadOptions, load_image
from medveil.obfuscator import Obfuscator
from medveil.store import ObfuscatedStore
from medveil.training import evaluate, predict

runner = CliRunner()
SIZE = 32


def ok(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def svd_key(tmp_path) -> tuple[Key, str]:
    path = tmp_path / "keys" / "site.key"
    ok("keygen", "--preset", "svd", "--size", SIZE, "--rank", 4, "-o", path)
    return Key.load(path), str(path)


def write_folder(root, *, per_class: int = 4) -> list:
    """Two classes of PNG files; returns them in the store's order (class, then name)."""
    return write_png_folder(root, classes=("infected", "notinfected"), per_class=per_class, seed=8)


def plaintext(files) -> np.ndarray:
    return np.stack([load_image(f, options=LoadOptions(size=SIZE)) for f in files])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small run trained from the shell on an svd store written with --keep-names."""
    tmp = tmp_path_factory.mktemp("cli-values")
    data, store, run = tmp / "data", tmp / "store", tmp / "run"
    ok("datasets", "make", "ovary-us", "-o", data, "--per-class", 10, "--size", 48)
    key, key_path = svd_key(tmp)
    ok("obfuscate", data, "--key", key_path, "-o", store, "--device", "cpu", "--keep-names")
    ok(
        "train", store, "-o", run, "--epochs", 2, "--input-size", SIZE, "--batch-size", 4,
        "--device", "cpu",
    )
    return data, store, run, key, key_path


def test_predict_prints_the_class_and_probability_the_model_gives(
    trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _, run, key, key_path = trained
    monkeypatch.chdir(data)  # short relative paths keep each table row on one line
    monkeypatch.setenv("COLUMNS", "200")
    files = sorted(data.glob("*/*.png"))[::3]
    names = [str(f.relative_to(data)) for f in files]
    want = predict(run, plaintext(files), key, device="cpu")
    table = ok("predict", run, *names, "--key", key_path, "--device", "cpu")
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.replace("│", "|").split("|") if c.strip()]
        if len(cells) == 3 and cells[0] in names:
            rows[cells[0]] = (cells[1], cells[2])
    assert set(rows) == set(names)
    for name, label, probs in zip(names, want.labels, want.probabilities):
        assert rows[name] == (want.classes[int(label)], f"{float(probs[int(label)]):.3f}")
    printed = json.loads(
        ok("predict", run, *names, "--key", key_path, "--device", "cpu", "--json")
    )
    assert [p["image"] for p in printed] == names
    assert [p["class"] for p in printed] == want.names
    for p, probs in zip(printed, want.probabilities):
        assert [p["probabilities"][c] for c in want.classes] == pytest.approx(probs, abs=1e-6)


def test_evaluate_scores_the_run_s_test_split_as_predict_does(trained, tmp_path) -> None:
    data, store, run, key, _ = trained
    ok("evaluate", run, "--data", store, "--device", "cpu")
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    library = evaluate(run, store, device="cpu")
    assert metrics["accuracy"] == pytest.approx(library.accuracy, abs=1e-12)
    # The same score from the plaintext files behind the run's test split, through predict.
    opened = ObfuscatedStore(store)
    split = json.loads((run / "splits.json").read_text())["test"]
    table, indices = split["table"], split["indices"]
    assert len(indices) >= 3
    files = [data / opened.names(table)[i] for i in indices]
    labels = opened.split(table).labels[indices]
    guessed = predict(run, plaintext(files), key, device="cpu").labels
    assert metrics["accuracy"] == pytest.approx(float(np.mean(guessed == labels)), abs=1e-12)


def test_keep_names_through_the_shell(tmp_path) -> None:
    key, key_path = svd_key(tmp_path)
    files = write_folder(tmp_path / "data", per_class=3)
    ok("obfuscate", tmp_path / "data", "--key", key_path, "-o", tmp_path / "named",
       "--device", "cpu", "--keep-names")
    named = ObfuscatedStore(tmp_path / "named")
    assert named.names("all") == [f.relative_to(tmp_path / "data").as_posix() for f in files]
    ok("obfuscate", tmp_path / "data", "--key", key_path, "-o", tmp_path / "plain",
       "--device", "cpu")
    with pytest.raises(StoreError, match="without keep_names"):
        ObfuscatedStore(tmp_path / "plain").names("all")
    for path in (tmp_path / "plain").rglob("*"):
        if path.is_file():
            assert b"img-0" not in path.read_bytes()


def test_skip_bad_through_the_shell(tmp_path) -> None:
    key, key_path = svd_key(tmp_path)
    files = write_folder(tmp_path / "data", per_class=3)
    (tmp_path / "data" / "notinfected" / "img-99.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    stopped = runner.invoke(
        app, ["obfuscate", str(tmp_path / "data"), "--key", key_path,
              "-o", str(tmp_path / "store"), "--device", "cpu"],
    )
    assert stopped.exit_code != 0 and "notinfected/img-99.png" in stopped.output
    assert not (tmp_path / "store" / "manifest.json").exists()
    output = ok("obfuscate", tmp_path / "data", "--key", key_path, "-o", tmp_path / "store",
                "--device", "cpu", "--skip-bad")
    assert "1 bad file(s) skipped" in " ".join(output.split())
    report = json.loads((tmp_path / "store.skipped.json").read_text())
    assert [s["path"] for s in report["skipped"]] == ["notinfected/img-99.png"]
    split = ObfuscatedStore(tmp_path / "store").split("all")
    assert split.labels.tolist() == [0, 0, 0, 1, 1, 1]
    want = Obfuscator(key)(plaintext(files))
    np.testing.assert_allclose(split.arrays(range(len(split))), want, rtol=0, atol=1e-6)
