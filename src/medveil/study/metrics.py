"""What a study run records and its report reads: the steps, the schemes, the gathered numbers.

:func:`collect_metrics` reads only the files the steps saved under the run folder (see
:mod:`medveil.study.run` for the layout) and writes them together as ``metrics.json`` and
``metrics/*.csv``; the report renders that, and recomputes nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from medveil.atomic import atomic_write_bytes, atomic_write_json
from medveil.errors import StudyError
from medveil.study.claims import thesis_claims
from medveil.study.config import ConfigError
from medveil.study.presets import recorded_presets

__all__ = ["STEPS", "collect_metrics"]

STEPS = ("data", "keys", "obfuscate", "pipeline", "efficiency", "train", "sweep", "privacy")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: missing; the study did not finish this step") from None
    except json.JSONDecodeError as exc:
        raise StudyError(f"{path}: unreadable ({exc})") from None


def _utility_rows(
    run_dir: Path, config: dict[str, Any], presets: tuple[str, ...]
) -> list[dict[str, Any]]:
    rows = []
    for scheme in ("plaintext", *presets):
        for model in config["training"]["models"]:
            folder = run_dir / "train" / scheme / model
            scores = _read_json(folder / "evaluation" / "metrics.json")
            trained = _read_json(folder / "run.json")
            rows.append({
                "scheme": scheme,
                "model": model,
                "input_size": trained["input_size"],
                "stem": trained.get("stem"),
                "epochs": trained.get("epochs_run"),
                "best_epoch": trained.get("best_epoch"),
                "test_images": scores["count"],
                "accuracy": scores["accuracy"],
                "macro_f1": scores["macro_f1"],
                "macro_auc": scores["macro_roc_auc"],
                "train_seconds": trained.get("wall_time_s"),
            })
    return rows


def _privacy_rows(run_dir: Path, presets: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for preset in presets:
        summary = _read_json(run_dir / "privacy" / preset / "summary.json")
        for row in summary["summary"]:
            # The study's name for the key (``private``), not the scheme it records (multistage).
            rows.append({**row, "preset": preset})
    return rows


def _finite(value: Any) -> Any:
    """NaN and infinities (a metric with no value) become ``None``: strict JSON has neither."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def collect_metrics(run_dir: str | Path) -> dict[str, Any]:
    """Gather every step's saved numbers into ``metrics.json`` and ``metrics/*.csv``.

    Reads only what the steps saved, so it can be rerun (by ``medveil report``) at no cost.
    """
    import yaml

    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "study.json").is_file():
        raise StudyError(f"{run_dir}: not a medveil study folder (no study.json)")
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{run_dir / 'config.yaml'}: unreadable ({exc})") from None
    info = _read_json(run_dir / "study.json")
    steps = _read_json(run_dir / "steps.json") if (run_dir / "steps.json").is_file() else {}
    sweep_csv = run_dir / "sweep" / "accuracy_vs_rank.csv"
    presets = recorded_presets(config)
    metrics: dict[str, Any] = {
        "study": info,
        "config": config,
        "presets": list(presets),
        "steps": [{"step": name, "seconds": steps[name]} for name in STEPS if name in steps],
        "obfuscation": _read_json(run_dir / "metrics" / "obfuscation.json"),
        "efficiency": _read_json(run_dir / "metrics" / "stage_timings.json"),
        "utility": _utility_rows(run_dir, config, presets),
        "sweep": pd.read_csv(sweep_csv).to_dict(orient="records") if sweep_csv.is_file() else [],
        "privacy": _privacy_rows(run_dir, presets),
        "key_params": {
            p: _read_json(run_dir / "privacy" / p / "summary.json")["info"]["params"]
            for p in presets
        },
    }
    metrics["claims"] = thesis_claims(metrics)
    metrics = _finite(metrics)
    atomic_write_json(run_dir / "metrics.json", metrics)
    for table in ("utility", "sweep", "privacy", "efficiency", "claims", "steps"):
        frame = pd.DataFrame(metrics[table])
        atomic_write_bytes(run_dir / "metrics" / f"{table}.csv", frame.to_csv(index=False).encode())
    return metrics

