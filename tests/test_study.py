"""The study: configuration validation, an end-to-end tiny run, its report, resume and rebuild."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import shutil
import stat
import typing
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medveil.cli import app
from medveil.keys import Preset, SchemeParams
from medveil.privacy import PrivacyConfig
from medveil.study import ConfigError, StudyError, load_config, run_study, write_report
from medveil.study.config import (
    QUICK,
    ObfuscationConfig,
    PrivacyStudyConfig,
    StudyConfig,
    TrainingStudyConfig,
)
from medveil.training import TrainConfig

# The quick profile shrunk further so that the whole study runs in seconds.
TINY = [
    "data.per_class=12",
    "data.image_size=64",
    "obfuscation.size=32",
    "obfuscation.rank=8",
    "obfuscation.calibration_images=24",
    "training.models=[smallcnn]",
    "training.epochs=2",
    "training.input_size=32",
    "sweep.ranks=[2,8]",
    "sweep.epochs=1",
    "privacy.victims=6",
    "privacy.public=12",
    "privacy.pairs=[8]",
    "privacy.decoder_steps=3",
    "privacy.mda_steps=3",
    "efficiency.images=16",
    "efficiency.repeats=1",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, StudyConfig]:
    base = tmp_path_factory.mktemp("study")
    run_dir, keys_dir = base / "run", base / "keys"
    config = load_config(quick=True, overrides=TINY)
    run_study(config, run_dir=run_dir, keys_dir=keys_dir)
    return run_dir, keys_dir, config


def test_defaults_and_quick_profile_are_valid() -> None:
    full = load_config()
    assert full.training.models == ("resnet50", "mobilenetv2", "inceptionv3")
    assert full.privacy.pairs == (100, 1000)
    quick = load_config(quick=True)
    assert quick.training.models == tuple(QUICK["training"]["models"])
    assert quick.obfuscation.size == QUICK["obfuscation"]["size"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.epochs=0", "training.epochs: must be at least 1, got 0"),
        ("training.epoch=3", "training.epoch: unknown field (did you mean 'training.epochs'?)"),
        ("training.epochs=abc", "training.epochs: must be int, got 'abc'"),
        ("training.models=[resnet51]", "training.models: unknown model 'resnet51'"),
        ("obfuscation.rank=500", "obfuscation.rank: must be in [1, size=224], got 500"),
        ("privacy.threats=[A4]", "privacy.threats: unknown threat model 'A4'"),
        ("privacy.attacks=[lbb]", "privacy.attacks: unknown attack 'lbb'"),
        ("sweep.ranks=[300]", "sweep.ranks: rank 300 exceeds obfuscation.size=224"),
        ("device=tpu", "device: must be auto, cpu or cuda, got 'tpu'"),
        ("presets=[svd,secret]",
         "presets: unknown preset 'secret'; valid: svd, multistage, private, balanced, dp-svd"),
        ("presets=[private,private]", "presets: 'private' is named more than once"),
        ("presets=[]", "presets: must name at least one preset"),
        ("training=3", "training: must be a mapping of fields, got 3"),
        ("epochs", "an override is SECTION.FIELD=VALUE"),
    ],
)
def test_invalid_values_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert message in str(info.value)


# --- every library parameter is a --set key, checked by the library class ---------------------

_SECTIONS = {
    # section: (library class, study section class, what the study builds from the section)
    "training": (TrainConfig, TrainingStudyConfig, lambda c: c.train_config(c.training.models[0])),
    "obfuscation": (SchemeParams, ObfuscationConfig, lambda c: c.scheme(Preset.MULTISTAGE)),
    "privacy": (PrivacyConfig, PrivacyStudyConfig, lambda c: c.privacy_config()),
}
# Test values where the type alone gives none that is valid (a new field of a plain type, an
# int, a float, a bool, an enumeration or a Literal, needs no entry).
_VALUES = {
    "clip_percentile": 99.0, "augment": "flip", "stem": "resize", "model": "mobilenetv2",
    "device": "cpu", "pairs": (7,), "threats": ("A2",), "attacks": ("lba",), "dp_epsilon": 2.0,
}


def _other_value(kind: object, default: object, name: str) -> object:
    """A valid value of the field ``name`` other than its ``default``."""
    if name in _VALUES:
        return _VALUES[name]
    options = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Literal:
        return next(o for o in options if o != default)
    if isinstance(default, enum.Enum):
        return next(m for m in type(default) if m is not default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2
    if default is None and int in options:
        return 96  # at least every model's smallest input size
    if default is None and Path in options:
        return Path("weights.pt")
    raise AssertionError(f"no test value for the new field {name!r}: add one to _VALUES")


def _library_fields() -> list[tuple[str, str]]:
    return [(section, f.name) for section, (library, _, _) in _SECTIONS.items()
            for f in dataclasses.fields(library)]


@pytest.mark.parametrize(("section", "name"), _library_fields())
def test_every_library_parameter_is_reachable_with_set(section: str, name: str) -> None:
    library, study_section, build = _SECTIONS[section]
    hints = typing.get_type_hints(library)
    default = getattr(library(), name)
    value = _other_value(hints[name], default, name)
    text = json.dumps(str(value) if isinstance(value, Path) else value)
    where = study_section.STUDY_SETS.get(name, f"{section}.{name}")
    if name == "preset":
        # Not a key: the study draws one key per preset, the svd one for stage 1 only.
        config = load_config()
        assert config.presets == ("svd", "multistage", "private")
        assert config.scheme(Preset.SVD) == SchemeParams.for_preset(Preset.SVD)
        assert config.scheme(Preset.MULTISTAGE) == SchemeParams()
        assert config.scheme("private") == SchemeParams.for_preset("private")
        return
    if where == "training.models":
        text = f"[{text}]"
    config = load_config(overrides=[f"{where}={text}"])
    assert getattr(build(config), name) == value
    assert getattr(build(load_config()), name) != value


def test_fields_the_study_sets_are_refused_in_their_section() -> None:
    with pytest.raises(ConfigError, match=r"^training\.seed: set by the study \(seed\)"):
        load_config(overrides=["training.seed=3"])
    with pytest.raises(ConfigError, match=r"^obfuscation\.preset: set by the study"):
        load_config(overrides=["obfuscation.preset=svd"])


@pytest.mark.parametrize(
    ("override", "library"),
    [
        ("training.lr=0", lambda: TrainConfig(lr=0.0)),
        ("training.batch_size=1", lambda: TrainConfig(batch_size=1)),
        ("training.schedule=linear", lambda: TrainConfig(schedule="linear")),
        ("training.input_size=64", lambda: TrainConfig(model="inceptionv3", input_size=64)),
        ("obfuscation.noise=12", lambda: SchemeParams(noise=12.0)),
        ("obfuscation.block_size=500", lambda: SchemeParams(block_size=500)),
        ("obfuscation.solver=qr", lambda: SchemeParams(solver="qr")),
        ("privacy.threats=[A4]", lambda: PrivacyConfig(threats=("A4",))),
    ],
)
def test_bounds_are_the_library_classes(override: str, library) -> None:
    with pytest.raises(ConfigError) as direct:
        library()
    with pytest.raises(ConfigError) as study:
        load_config(overrides=[override])
    section = override.split(".")[0]
    assert str(study.value) == f"{section}.{direct.value.field}: {direct.value.problem}"


def test_a_float_in_exponent_notation_is_read_as_a_number() -> None:
    # YAML 1.1 reads 1e-3 (no dot) as a string; `--set training.lr=1e-3` means the number.
    config = load_config(overrides=["training.lr=1e-3", "training.weight_decay=5E-5"])
    assert (config.training.lr, config.training.weight_decay) == (0.001, 5e-5)
    with pytest.raises(ConfigError, match="training.lr: must be float, got 'e-3'"):
        load_config(overrides=["training.lr=e-3"])


def test_a_study_saved_before_a_setting_existed_resumes(tmp_path: Path) -> None:
    # config.yaml of an older medveil lacks the settings added since: they take their default.
    config = load_config(quick=True, overrides=TINY)
    saved = config.to_dict()
    del saved["training"]["schedule"], saved["obfuscation"]["solver"]
    assert StudyConfig.from_dict(saved) == config


def test_yaml_file_is_merged_and_bad_files_are_named(tmp_path: Path) -> None:
    good = tmp_path / "study.yaml"
    good.write_text("training:\n  epochs: 4\n  models: [smallcnn]\nprivacy:\n  pairs: [10, 20]\n")
    config = load_config(good, overrides=["training.epochs=5"])
    assert config.training.epochs == 5  # the command line wins over the file
    assert config.training.models == ("smallcnn",)
    assert config.privacy.pairs == (10, 20)
    broken = tmp_path / "broken.yaml"
    broken.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: the configuration must be a mapping"):
        load_config(listing)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips_through_yaml() -> None:
    config = load_config(quick=True, overrides=TINY)
    assert StudyConfig.from_dict(yaml.safe_load(config.to_yaml())) == config


def test_cli_sets_any_library_parameter_and_rejects_it_out_of_bounds(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["study", "-o", str(tmp_path / "run"), "--keys", str(tmp_path / "keys"),
              "--set", "obfuscation.solver=exact", "--set", "training.schedule=linear"],
    )
    assert result.exit_code == 2
    assert result.output == (
        "error: training.schedule: must be 'onecycle' or 'cosine', got 'linear'\n"
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "keys").exists()


def test_cli_rejects_a_bad_value_before_any_work(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["study", "-o", str(tmp_path / "run"), "--keys", str(tmp_path / "keys"),
              "--set", "training.epochs=0"],
    )
    assert result.exit_code == 2
    assert "training.epochs: must be at least 1" in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "keys").exists()


def test_study_writes_every_output_and_keeps_keys_apart(study) -> None:
    run_dir, keys_dir, config = study
    for name in ("config.yaml", "study.json", "steps.json", "metrics.json", "report.html",
                 "figures/pipeline.png", "sweep/accuracy_vs_rank.png",
                 "privacy/svd/examples.png", "privacy/multistage/examples.png"):
        assert (run_dir / name).is_file(), name
    for table in ("utility", "privacy", "sweep", "efficiency", "claims", "steps"):
        assert (run_dir / "metrics" / f"{table}.csv").is_file(), table
    assert StudyConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())) == config
    assert not list(run_dir.rglob("*.key"))
    info = json.loads((run_dir / "study.json").read_text())
    keys = sorted(keys_dir.glob("*.key"))
    assert [p.name for p in keys] == [
        f"study-{info['run_id']}-{preset}.key" for preset in ("multistage", "private", "svd")
    ]
    for path in keys:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert info["run_id"] in path.name
    from medveil.keys import Key

    assert {Key.load(p).fingerprint for p in keys} == set(info["keys"].values())


def test_metrics_hold_every_table(study) -> None:
    run_dir, _, config = study
    metrics = json.loads((run_dir / "metrics.json").read_text())
    utility = metrics["utility"]
    assert [(r["scheme"], r["model"]) for r in utility] == [
        (s, "smallcnn") for s in ("plaintext", "svd", "multistage", "private")
    ]
    assert metrics["presets"] == ["svd", "multistage", "private"]
    assert all(0 <= r["accuracy"] <= 1 and r["test_images"] > 0 for r in utility)
    assert [r["rank"] for r in metrics["sweep"]] == [2, 8]
    attacks = {(r["preset"], r["attack"]) for r in metrics["privacy"]}
    assert ("svd", "public_basis") in attacks and ("multistage", "lba") in attacks
    assert ("multistage", "mda") in attacks and ("multistage", "reid") in attacks
    stages = {(r["preset"], r["stage"]) for r in metrics["efficiency"]}
    assert stages >= {("svd", "truncation"), ("multistage", "projection"), ("multistage", "total"),
                      ("private", "projection"), ("private", "total")}
    assert ("private", "quantization") not in stages  # private switches quantization off
    assert ("private", "reid") in attacks and ("private", "mean_image") in attacks
    assert all(r["ms_per_image"] > 0 for r in metrics["efficiency"])
    assert [s["step"] for s in metrics["steps"]] == [
        "data", "keys", "obfuscate", "pipeline", "efficiency", "train", "sweep", "privacy"
    ]
    # Claims are derived from the same rows.
    lba = max(
        (r for r in metrics["privacy"] if r["preset"] == "multistage" and r["attack"] == "lba"),
        key=lambda r: r["ssim_mean"],
    )
    claim = next(c for c in metrics["claims"] if c["claim"].startswith("Leading Bit Attack: mean SSIM"))
    assert claim["value"] == pytest.approx(lba["ssim_mean"])
    assert claim["met"] == (lba["ssim_mean"] < 0.07)


def _section(text: str, ident: str) -> str:
    match = re.search(rf'<table id="{ident}">(.*?)</table>', text, re.S)
    assert match, ident
    return match.group(1)


def test_report_tradeoff_points_come_from_the_metrics(study) -> None:
    run_dir, _, _ = study
    text = (run_dir / "report.html").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table = _section(text, "tradeoff")
    assert table.count("<tr>") == 4  # header, svd, multistage, private

    def a1(preset: str, attack: str, column: str) -> float:
        return next(r[column] for r in metrics["privacy"]
                    if (r["preset"], r["attack"], r["threat"]) == (preset, attack, "A1"))

    for preset in ("svd", "multistage", "private"):
        row = re.search(rf'<td class="l">{preset}</td>(.*?)</tr>', table, re.S).group(1)
        accuracy = next(r["accuracy"] for r in metrics["utility"] if r["scheme"] == preset)
        above = a1(preset, "nearest_public", "ssim_mean") - a1(preset, "mean_image", "ssim_mean")
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert cells == [f"{accuracy:.3f}", f"{a1(preset, 'reid', 'top1_mean'):.3f}",
                         f"{above:.3f}"]
    assert 'alt="accuracy against privacy"' in text


def test_report_tables_match_the_metrics(study) -> None:
    run_dir, _, _ = study
    text = (run_dir / "report.html").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "http://" not in text and "https://" not in text  # self-contained: opens offline
    assert text.count("data:image/png;base64,") >= 4
    detail = _section(text, "utility-detail")
    assert detail.count("<tr>") == len(metrics["utility"]) + 1
    for row in metrics["utility"]:
        assert f"{row['accuracy']:.3f}" in detail
        assert f"{row['macro_f1']:.3f}" in detail
        # The stem each run read its arrays through: learned on obfuscated data, a resize on
        # plaintext.
        assert row["stem"] == ("resize" if row["scheme"] == "plaintext" else "linear")
        assert f'<td class="l">{row["stem"]}</td>' in detail
    assert "reads the array through a learned two-sided linear stem (<code>linear</code>" in text
    assert "on plaintext through a fixed resize (<code>resize</code>)." in text
    for preset in ("svd", "multistage", "private"):
        table = _section(text, f"privacy-{preset}")
        rows = [r for r in metrics["privacy"] if r["preset"] == preset]
        assert table.count("<tr>") == len(rows) + 1
        for row in rows:
            if row.get("ssim_mean") is not None:
                assert f"{row['ssim_mean']:.3f} ± {row['ssim_std']:.3f}" in table
            else:
                assert f"{row['top1_mean']:.3f} ({row['chance_top1']:.3f})" in table
    claims = _section(text, "claims-table")
    assert claims.count("<tr>") == len(metrics["claims"]) + 1
    verdicts = claims.count("badge met") + claims.count("badge not") + claims.count("badge na")
    assert verdicts == len(metrics["claims"])
    sweep = _section(text, "sweep-table")
    for row in metrics["sweep"]:
        assert f"{row['test_accuracy']:.3f}" in sweep
    # One column per preset, the table on the section's whole width (no half-width cell that
    # a third preset's column ran out of).
    stages = _section(text, "stage-table")
    for preset in ("svd", "multistage", "private"):
        assert f"<th>{preset} ms/image</th>" in stages
    assert text.index('<div class="scroll"><table id="stage-table"') > text.index(
        '<section id="efficiency">'
    )
    run_table = _section(text, "run-table")
    for fingerprint in metrics["study"]["keys"].values():
        assert fingerprint in run_table


def test_rerun_resumes_and_report_rebuilds(study, tmp_path: Path) -> None:
    run_dir, keys_dir, config = study
    steps = (run_dir / "steps.json").read_text()
    store = run_dir / "stores" / "multistage" / "manifest.json"
    before = store.stat().st_mtime_ns
    run_study(config, run_dir=run_dir, keys_dir=keys_dir)
    assert (run_dir / "steps.json").read_text() == steps  # nothing was redone
    assert store.stat().st_mtime_ns == before

    (run_dir / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "claims-table" in (run_dir / "report.html").read_text()

    with pytest.raises(StudyError, match="changed: training.epochs"):
        run_study(
            load_config(quick=True, overrides=[*TINY, "training.epochs=3"]),
            run_dir=run_dir, keys_dir=keys_dir,
        )


def test_an_interrupted_step_is_redone(study) -> None:
    run_dir, keys_dir, config = study
    steps = json.loads((run_dir / "steps.json").read_text())
    del steps["privacy"]
    (run_dir / "steps.json").write_text(json.dumps(steps))
    (run_dir / "privacy" / "multistage" / "summary.json").unlink()
    with pytest.raises(StudyError, match="summary.json: missing"):
        write_report(run_dir)
    run_study(config, run_dir=run_dir, keys_dir=keys_dir)
    assert (run_dir / "privacy" / "multistage" / "summary.json").is_file()
    assert "privacy" in json.loads((run_dir / "steps.json").read_text())


def test_keys_inside_the_run_or_a_missing_key_are_refused(study, tmp_path: Path) -> None:
    run_dir, keys_dir, config = study
    from medveil.errors import InvalidKeyError

    with pytest.raises(InvalidKeyError, match="refusing"):
        run_study(config, run_dir=tmp_path / "run", keys_dir=tmp_path / "run" / "keys")
    with pytest.raises(StudyError, match="not a medveil study"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "notes.txt").write_text("mine")
        run_study(config, run_dir=tmp_path / "other", keys_dir=tmp_path / "k")
    # A resumed study whose key file is gone cannot continue.
    steps = json.loads((run_dir / "steps.json").read_text())
    del steps["pipeline"]
    (run_dir / "steps.json").write_text(json.dumps(steps))
    with pytest.raises(StudyError, match="key of this study is missing"):
        run_study(config, run_dir=run_dir, keys_dir=tmp_path / "empty-keys")


def test_utility_rows_are_the_accuracy_of_each_run_on_its_test_split(study) -> None:
    # Recomputed here from each run's best weights and its held-out test indices, so a row
    # that pointed at the wrong run, split or scheme would not match.
    import numpy as np

    from medveil.training import load_run
    from medveil.training.data import open_data

    run_dir, _, _ = study
    metrics = json.loads((run_dir / "metrics.json").read_text())
    data = {"plaintext": next((run_dir / "data").iterdir())}
    data.update({s: run_dir / "stores" / s for s in ("svd", "multistage", "private")})
    for row in metrics["utility"]:
        folder = run_dir / "train" / row["scheme"] / row["model"]
        trained = load_run(folder)
        source = open_data(data[row["scheme"]], image_size=trained.input_size)
        split = json.loads((folder / "splits.json").read_text())["test"]
        table, indices = source.tables[split["table"]], np.asarray(split["indices"])
        guessed = trained.probabilities(table.arrays(indices)).argmax(axis=1)
        assert row["test_images"] == len(indices)
        assert row["accuracy"] == pytest.approx(np.mean(guessed == table.labels[indices]))


def test_the_private_preset_gets_its_own_key_store_and_report_point(study) -> None:
    from medveil.keys import Key
    from medveil.store import ObfuscatedStore

    run_dir, keys_dir, config = study
    info = json.loads((run_dir / "study.json").read_text())
    path = keys_dir / f"study-{info['run_id']}-private.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = Key.load(path)
    # The study's obfuscation parameters with the named setting's in their place.
    params = key.params
    assert (str(params.preset), params.size, params.rank) == ("multistage", 32, 8)
    assert (params.dp_epsilon, params.bits, params.noise) == (2.0, None, 0.0)
    assert (params.left, params.right, params.width, params.clip_percentile) == (
        config.obfuscation.left, config.obfuscation.right, config.obfuscation.width,
        config.obfuscation.clip_percentile,
    )
    assert key.is_calibrated and key.calibration.images == config.obfuscation.calibration_images
    assert info["keys"]["private"] == key.fingerprint
    assert ObfuscatedStore(run_dir / "stores" / "private").key_fingerprint == key.fingerprint
    assert key.fingerprint not in {info["keys"]["svd"], info["keys"]["multistage"]}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["key_params"]["private"] == params.to_dict()
    text = (run_dir / "report.html").read_text()
    row = re.search(r'<td class="l">private</td>(.*?)</tr>', _section(text, "params-table"), re.S)
    # bits off, eta 0, DP epsilon 2, then the projections (no Python None in the page).
    assert re.findall(r"<td>(.*?)</td>", row.group(1))[:7] == [
        "32", "8", "off", "0.0", "2.0", "orthogonal", "gaussian"
    ]
    assert "None" not in text
    assert re.search(r'<td class="l">private</td>', _section(text, "tradeoff"))
    assert "<h3>private preset</h3>" in text


def test_a_study_recorded_before_presets_resumes_with_its_two(study, tmp_path: Path) -> None:
    # An older study: config.yaml without `presets`, keys, stores and results for svd and
    # multistage only. Rerun with the default presets, it resumes as it was run.
    run_dir, keys_dir, config = study
    old_run, old_keys = tmp_path / "run", tmp_path / "keys"
    shutil.copytree(run_dir, old_run)
    shutil.copytree(keys_dir, old_keys)
    info = json.loads((old_run / "study.json").read_text())
    (old_keys / f"study-{info['run_id']}-private.key").unlink()
    del info["keys"]["private"]
    (old_run / "study.json").write_text(json.dumps(info))
    saved = yaml.safe_load((old_run / "config.yaml").read_text())
    del saved["presets"]
    (old_run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    for folder in ("stores", "train", "privacy"):
        shutil.rmtree(old_run / folder / "private")
    steps = json.loads((old_run / "steps.json").read_text())
    del steps["efficiency"]  # a step left to do, which loops over the presets
    (old_run / "steps.json").write_text(json.dumps(steps))

    result = run_study(config, run_dir=old_run, keys_dir=old_keys)
    assert config.presets == ("svd", "multistage", "private")
    assert result.metrics["presets"] == ["svd", "multistage"]
    assert sorted(p.name for p in old_keys.iterdir()) == [
        f"study-{info['run_id']}-{preset}.key" for preset in ("multistage", "svd")
    ]
    assert not (old_run / "stores" / "private").exists()
    timings = json.loads((old_run / "metrics" / "stage_timings.json").read_text())
    assert list(dict.fromkeys(r["preset"] for r in timings)) == ["svd", "multistage"]
    assert _section((old_run / "report.html").read_text(), "tradeoff").count("<tr>") == 3
    assert "presets" not in yaml.safe_load((old_run / "config.yaml").read_text())
    # Asking for other presets than it ran is a change of configuration.
    with pytest.raises(StudyError, match="changed: presets"):
        run_study(load_config(quick=True, overrides=[*TINY, "presets=[svd,private]"]),
                  run_dir=old_run, keys_dir=old_keys)


def test_claims_on_a_preset_the_study_left_out_say_not_run() -> None:
    from medveil.study.claims import thesis_claims

    metrics = {
        "utility": [{"scheme": "plaintext", "model": "smallcnn", "accuracy": 0.9},
                    {"scheme": "private", "model": "smallcnn", "accuracy": 0.7}],
        "privacy": [{"preset": "private", "attack": "lba", "threat": "A1", "ssim_mean": 0.01,
                     "psnr_unclipped_mean": -3.0}],
    }
    claims = thesis_claims(metrics)
    assert [(c["claim"], c["ours"], c["met"]) for c in claims] == [
        ("smallcnn accuracy on multistage", "not run", None),
        ("Leading Bit Attack: mean SSIM on multistage", "not run", None),
        ("Leading Bit Attack: PSNR (unclipped) on multistage", "not run", None),
        ("Minimum Difference Attack: mean SSIM on multistage", "not run", None),
        ("Minimum Difference Attack: PSNR (unclipped) on multistage", "not run", None),
        ("public-basis attack: svd reconstructed better than multistage", "not run", None),
    ]


def test_the_utility_note_names_the_stems_the_runs_recorded() -> None:
    from medveil.study.report import _stem_note

    rows = [
        {"scheme": "multistage", "stem": "fitted"}, {"scheme": "svd", "stem": "linear"},
        {"scheme": "plaintext", "stem": "resize"},
    ]
    note = _stem_note(rows)
    assert note.startswith("On obfuscated arrays the model reads the array through a learned")
    assert "<code>fitted</code>) or a learned two-sided linear stem (<code>linear</code>" in note
    assert note.endswith("; on plaintext through a fixed resize (<code>resize</code>).")
    assert _stem_note([{"scheme": "plaintext", "stem": None}]) == (
        "On plaintext through a fixed resize (<code>resize</code>)."
    )
