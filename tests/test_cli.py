from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from medveil.cli import app
from medveil.keys import Key
from medveil.store import ObfuscatedStore

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["keygen"],
        ["obfuscate"],
        ["show"],
        ["info"],
        ["datasets", "make"],
        ["train"],
        ["evaluate"],
        ["predict"],
        ["sweep-rank"],
    ],
)
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_end_to_end_on_a_small_embedded_set(tmp_path):
    data, keys, store = tmp_path / "data", tmp_path / "keys", tmp_path / "store"
    made = runner.invoke(
        app,
        [
            "datasets",
            "make",
            "brain-mri",
            "-o",
            str(data),
            "--per-class",
            "3",
            "--size",
            "64",
            "--test-fraction",
            "0.34",
        ],
    )
    assert made.exit_code == 0, made.output
    keygen = runner.invoke(
        app,
        [
            "keygen",
            "--preset",
            "multistage",
            "--size",
            "48",
            "--rank",
            "6",
            "--calibrate",
            str(data),
            "-o",
            str(keys / "site.key"),
        ],
    )
    assert keygen.exit_code == 0, keygen.output
    key = Key.load(keys / "site.key")
    assert stat.S_IMODE(os.stat(keys / "site.key").st_mode) == 0o600
    assert key.calibration is not None and key.calibration.images == 12

    run = runner.invoke(
        app,
        [
            "obfuscate",
            str(data),
            "--key",
            str(keys / "site.key"),
            "-o",
            str(store),
            "--device",
            "cpu",
        ],
    )
    assert run.exit_code == 0, run.output
    opened = ObfuscatedStore(store)
    assert opened.splits == ("train", "test") and opened.shape == (48, 48)
    assert sum(opened.manifest["splits"][s]["count"] for s in opened.splits) == 12
    info = runner.invoke(app, ["info", str(store)])
    assert info.exit_code == 0 and "glioma" in info.output and key.fingerprint in info.output
    # Parameters as a table for a person, not a JSON dict; JSON only with --json.
    assert "key parameters" in info.output and "{" not in info.output
    assert re.search(r"rank\s*│\s*6\b", info.output) and re.search(r"bits\s*│\s*8\b", info.output)
    as_json = runner.invoke(app, ["info", str(store), "--json"])
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.stdout)
    assert summary["params"] == key.params.to_dict() and summary["key_fingerprint"] == key.fingerprint
    assert summary["splits"]["test"]["count"] + summary["splits"]["train"]["count"] == 12

    image = sorted((data / "Training" / "glioma").glob("*.png"))[0]
    show = runner.invoke(
        app,
        [
            "show",
            str(image),
            "--key",
            str(keys / "site.key"),
            "-o",
            str(tmp_path / "fig" / "stages.png"),
        ],
    )
    assert show.exit_code == 0, show.output
    assert (tmp_path / "fig" / "stages.png").read_bytes()[:4] == b"\x89PNG"

    # The secret never appears in anything the commands printed or wrote outside the key file.
    secret = key.secret.hex()
    for result in (keygen, run, info, show):
        assert secret not in result.output
    for path in store.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes()


def test_keys_are_refused_inside_outputs(tmp_path):
    data = tmp_path / "data"
    runner.invoke(
        app, ["datasets", "make", "ovary-us", "-o", str(data), "--per-class", "2", "--size", "48"]
    )
    store = tmp_path / "store"
    keygen = runner.invoke(
        app,
        ["keygen", "--preset", "svd", "--size", "32", "--rank", "4", "-o", str(tmp_path / "k.key")],
    )
    assert keygen.exit_code == 0, keygen.output
    assert (
        runner.invoke(
            app,
            [
                "obfuscate",
                str(data),
                "--key",
                str(tmp_path / "k.key"),
                "-o",
                str(store),
                "--device",
                "cpu",
            ],
        ).exit_code
        == 0
    )
    inside = runner.invoke(
        app,
        ["keygen", "--preset", "svd", "--size", "32", "--rank", "4", "-o", str(store / "k.key")],
    )
    assert inside.exit_code == 2 and "output folder" in inside.output
    assert not (store / "k.key").exists()
    (store / "k2.key").write_text(json.dumps({}))
    refused = runner.invoke(
        app, ["obfuscate", str(data), "--key", str(store / "k2.key"), "-o", str(store)]
    )
    assert refused.exit_code == 2 and "inside the output folder" in refused.output


def test_version_and_python_dash_m(tmp_path):
    from medveil import __version__

    shown = runner.invoke(app, ["--version"])
    assert shown.exit_code == 0 and shown.stdout == f"medveil {__version__}\n"
    module = subprocess.run(
        [sys.executable, "-m", "medveil", "--version"], capture_output=True, text=True, timeout=60
    )
    assert module.returncode == 0 and module.stdout == f"medveil {__version__}\n", module.stderr
    helped = runner.invoke(app, ["--help"])
    assert "Exit codes: 0 success; 1 failure" in " ".join(helped.output.split())


def test_exit_codes_usage_bad_input_and_failure(tmp_path):
    usage = runner.invoke(app, ["obfuscate", "--no-such-option"])
    assert usage.exit_code == 2
    data = tmp_path / "data"
    _succeeds("datasets", "make", "ovary-us", "-o", data, "--per-class", 2, "--size", 40)
    _succeeds("keygen", "--preset", "svd", "--size", 32, "--rank", 4, "-o", tmp_path / "k.key")
    (data / "infected" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    bad = runner.invoke(
        app, ["obfuscate", str(data), "--key", str(tmp_path / "k.key"), "-o", str(tmp_path / "s")]
    )
    assert bad.exit_code == 2 and "infected/broken.png: not an image (its content" in bad.output
    (data / "infected" / "broken.png").unlink()
    # Another run holds the output folder: a failure of this run (1), not bad input.
    from medveil.store import StoreWriter

    holder = StoreWriter(tmp_path / "busy", plan={})
    try:
        busy = runner.invoke(
            app,
            ["obfuscate", str(data), "--key", str(tmp_path / "k.key"), "-o", str(tmp_path / "busy")],
        )
    finally:
        holder.close()
    assert busy.exit_code == 1 and "another medveil run is writing" in busy.output


def test_markup_and_undecodable_names_are_printed_as_text(tmp_path):
    data = tmp_path / "data"
    _succeeds("datasets", "make", "ovary-us", "-o", data, "--per-class", 2, "--size", 40)
    _succeeds("keygen", "--preset", "svd", "--size", 32, "--rank", 4, "-o", tmp_path / "k.key")
    odd = os.fsencode(data / "infected") + b"/[red]x\xff.png"
    with open(odd, "wb") as handle:
        handle.write(b"")
    bad = runner.invoke(
        app, ["obfuscate", str(data), "--key", str(tmp_path / "k.key"), "-o", str(tmp_path / "s")]
    )
    assert bad.exit_code == 2
    assert "infected/[red]x\\xff.png: file is empty" in bad.output

    missing = runner.invoke(
        app,
        [
            "obfuscate",
            str(tmp_path / "nope"),
            "--key",
            str(tmp_path / "absent.key"),
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert missing.exit_code == 2 and "absent.key" in missing.output
    needs = runner.invoke(app, ["keygen", "-o", str(tmp_path / "k.key")])
    assert needs.exit_code == 2 and "--calibrate" in needs.output


def _succeeds(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_train_evaluate_predict_from_the_shell(tmp_path):
    data, store, run = tmp_path / "data", tmp_path / "store", tmp_path / "run"
    _succeeds("datasets", "make", "ovary-us", "-o", data, "--per-class", 8, "--size", 64)

    def keygen(name: str) -> None:
        _succeeds(
            "keygen", "--size", 32, "--rank", 4, "--calibrate", data, "-o", tmp_path / "keys" / name
        )

    keygen("site.key")
    _succeeds(
        "obfuscate", data, "--key", tmp_path / "keys" / "site.key", "-o", store, "--device", "cpu"
    )
    trained = runner.invoke(
        app,
        [
            "train",
            str(store),
            "-o",
            str(run),
            "--epochs",
            "2",
            "--input-size",
            "32",
            "--batch-size",
            "4",
            "--device",
            "cpu",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert (run / "best.pt").is_file() and (run / "run.json").is_file()
    evaluated = runner.invoke(app, ["evaluate", str(run), "--data", str(store), "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and (run / "evaluation" / "confusion.png").is_file()
    # Paths as plain text, not a repr of a dict of PosixPaths.
    assert "PosixPath" not in evaluated.output and "{'" not in evaluated.output
    assert (
        f"saved metrics in {run / 'evaluation'}: metrics.json, per_class.csv, confusion.csv, "
        "confusion.png" in " ".join(evaluated.output.split())
    )
    as_json = runner.invoke(
        app, ["evaluate", str(run), "--data", str(store), "--device", "cpu", "--json"]
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == metrics
    images = [str(p) for p in sorted((data / "infected").glob("*.png"))[:2]]
    predicted = runner.invoke(
        app,
        [
            "predict",
            str(run),
            *images,
            "--key",
            str(tmp_path / "keys" / "site.key"),
            "--device",
            "cpu",
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    assert "infected" in predicted.output
    predicted_json = runner.invoke(
        app,
        ["predict", str(run), *images, "--key", str(tmp_path / "keys" / "site.key"),
         "--device", "cpu", "--json"],
    )
    assert predicted_json.exit_code == 0, predicted_json.output
    rows = json.loads(predicted_json.stdout)
    assert [row["image"] for row in rows] == images
    for row in rows:
        assert set(row["probabilities"]) == {"infected", "notinfected"}
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
        assert row["class"] == max(row["probabilities"], key=row["probabilities"].get)
    keygen("other.key")
    refused = runner.invoke(
        app,
        [
            "predict",
            str(run),
            *images,
            "--key",
            str(tmp_path / "keys" / "other.key"),
            "--device",
            "cpu",
        ],
    )
    assert refused.exit_code == 2 and "fingerprint" in refused.output

    # A damaged store is refused by every command that reads it, naming the shard.
    shard = store / "all" / "images-00000.npy"
    shard.write_bytes(shard.read_bytes()[:-64])
    for command in (
        ["info", str(store)],
        ["train", str(store), "-o", str(tmp_path / "run2"), "--epochs", "1", "--device", "cpu"],
        ["evaluate", str(run), "--data", str(store), "--device", "cpu"],
    ):
        damaged = runner.invoke(app, command)
        assert damaged.exit_code == 2, (command, damaged.output)
        assert "shard file all/images-00000.npy is" in " ".join(damaged.output.split())
        assert "truncated" in damaged.output


def _error_exit_codes() -> dict[type[BaseException], int]:
    """Every medveil error class (and the other errors a command may meet) and its exit code."""
    from medveil import errors
    from medveil.store import StoreBusyError, StoreWriteError

    codes: dict[type[BaseException], int] = {
        errors.MedveilError: 2, errors.LoadError: 2, errors.ImageLoadError: 2,
        errors.DatasetLayoutError: 2, errors.InvalidKeyError: 2, errors.KeyParameterError: 2,
        errors.StoreError: 2, errors.ConfigError: 2, errors.RunError: 2, errors.StudyError: 2,
        StoreBusyError: 1, StoreWriteError: 1,
        ValueError: 2, FileNotFoundError: 2, FileExistsError: 2, PermissionError: 1, OSError: 1,
    }
    # A new error class must be given its exit code here (a warning ends no command).
    raised = {getattr(errors, name) for name in errors.__all__} - {errors.MedveilWarning}
    assert raised <= set(codes)
    return codes


@pytest.mark.parametrize(
    ("error", "code"), list(_error_exit_codes().items()), ids=lambda v: getattr(v, "__name__", "")
)
def test_one_handler_maps_each_error_class_to_its_exit_code(tmp_path, monkeypatch, error, code):
    import medveil.study
    from medveil.errors import ImageLoadError

    if error is ImageLoadError:
        raised: BaseException = ImageLoadError("scan.png", "cannot be read")
    elif issubclass(error, OSError):
        raised = error(13, "cannot be read", "scan.png")
    else:
        raised = error("scan.png: cannot be read")

    def fails(run):  # the library call of `medveil report`
        raise raised

    monkeypatch.setattr(medveil.study, "write_report", fails)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == code
    assert result.output == "error: scan.png: cannot be read\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_unexpected_error_keeps_its_traceback(tmp_path, monkeypatch):
    import medveil.study

    def fails(run):
        raise RuntimeError("a bug")

    monkeypatch.setattr(medveil.study, "write_report", fails)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
