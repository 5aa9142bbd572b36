"""The study: data, keys, obfuscation, training, rank sweep, attacks, timings, report.

Every step writes its outputs under the run folder and is recorded in ``steps.json`` once
complete, so that a rerun of the same command skips finished steps and resumes an interrupted
one (training runs resume from their last checkpoint). The keys are written to a separate
folder, never inside the run; the run records only their fingerprints.

Run folder::

    config.yaml          the resolved configuration
    study.json           run id, versions, machine, dataset, key fingerprints
    steps.json           wall time of every finished step
    data/<name>/         the embedded synthetic data set (when no dataset is given)
    stores/<preset>/     the obfuscated stores, one per entry of ``presets``
    train/<scheme>/<model>/   training runs, each with evaluation/
    sweep/               accuracy against k (runs, CSV, PNG)
    privacy/<preset>/    the attack suite's results and example reconstructions
    figures/pipeline.png the stages on example images
    metrics.json, metrics/*.csv   every number of the report
    report.html          the self-contained report
"""

from __future__ import annotations

import json
import platform
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import medveil
from medveil.atomic import atomic_write_bytes, atomic_write_json
from medveil.calibration import calibrate, load_calibration_images
from medveil.errors import StudyError
from medveil.figures import pipeline_figure, save_figure
from medveil.keys import Key, Preset, ensure_key_folder, ensure_not_in_output, generate_key
from medveil.layout import scan_dataset
from medveil.loading import LoadOptions, load_image
from medveil.machine import describe, resolve_device
from medveil.obfuscate import obfuscate_dataset
from medveil.obfuscator import Obfuscator
from medveil.outputs import mark_output
from medveil.privacy import run_privacy
from medveil.study.config import ConfigError, StudyConfig
from medveil.study.efficiency import stage_timings
from medveil.study.metrics import STEPS
from medveil.study.presets import resumed_presets
from medveil.study.report import write_report
from medveil.synthetic.write import write_dataset
from medveil.training import evaluate, sweep_rank, train

__all__ = ["StudyResult", "run_study"]


@dataclass(frozen=True)
class StudyResult:
    """Where a finished study's outputs are, and its metrics."""

    run_dir: Path
    report: Path
    metrics: dict[str, Any]

    def summary(self) -> str:
        lines = [f"study in {self.run_dir}: report {self.report}"]
        for claim in self.metrics["claims"]:
            verdict = {True: "met", False: "NOT met", None: "n/a"}[claim["met"]]
            lines.append(f"  {claim['claim']}: {claim['ours']} ({verdict})")
        return "\n".join(lines)


class _Run:
    """The run folder's bookkeeping: identity, step records, key files."""

    def __init__(self, run_dir: Path, keys_dir: Path, config: StudyConfig) -> None:
        self.dir = run_dir
        self.keys_dir = keys_dir
        self.config = config
        self.steps_path = run_dir / "steps.json"
        self.info_path = run_dir / "study.json"

    def open(self) -> None:
        text = self.config.to_yaml()
        config_path = self.dir / "config.yaml"
        if self.dir.exists() and any(self.dir.iterdir()):
            if not self.info_path.is_file():
                raise StudyError(
                    f"{self.dir}: folder is not empty and is not a medveil study; choose a new "
                    "folder"
                )
            if (saved := self._saved_config(config_path)) is not None:
                data = yaml.safe_load(config_path.read_text()) or {}
                self.config = replace(self.config, presets=resumed_presets(data, self.config.presets))
            if saved != self.config:
                raise StudyError(
                    f"{self.dir}: this study was started with a different configuration "
                    f"({self._differences(config_path)}); rerun with the same settings to "
                    "resume it, or pass --restart to start it again"
                )
            return
        (self.dir / "metrics").mkdir(parents=True, exist_ok=True)
        mark_output(self.dir, kind="study")
        atomic_write_bytes(config_path, text.encode())
        atomic_write_json(
            self.info_path,
            {
                "format": "medveil-study",
                "run_id": secrets.token_hex(6),
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "medveil": medveil.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": describe(),
                "keys": {},
            },
        )

    @staticmethod
    def _saved_config(saved: Path) -> StudyConfig | None:
        """The configuration a study was started with, read as a configuration (so that a
        setting added to medveil since, at its default, is no change); ``None`` if unreadable."""
        try:
            return StudyConfig.from_saved(yaml.safe_load(saved.read_text()) or {})
        except (OSError, yaml.YAMLError, ConfigError):
            return None

    def _differences(self, saved: Path) -> str:
        old = self._saved_config(saved)
        changed = [] if old is None else _changed_fields(old.to_dict(), self.config.to_dict())
        return "changed: " + ", ".join(changed) if changed else "the file was edited"

    @property
    def info(self) -> dict[str, Any]:
        return json.loads(self.info_path.read_text())

    def update_info(self, **values: Any) -> None:
        atomic_write_json(self.info_path, {**self.info, **values})

    def steps(self) -> dict[str, float]:
        return json.loads(self.steps_path.read_text()) if self.steps_path.is_file() else {}

    def finish_step(self, name: str, seconds: float) -> None:
        atomic_write_json(self.steps_path, {**self.steps(), name: seconds})

    def key_path(self, preset: str) -> Path:
        return self.keys_dir / f"study-{self.info['run_id']}-{preset}.key"


def _changed_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two nested configurations."""
    names = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            names += _changed_fields(a, b, f"{prefix}{name}.")
        elif a != b:
            names.append(prefix + name)
    return names


def _dataset_root(run: _Run) -> Path:
    data = run.config.data
    if data.path is not None:
        return Path(data.path).expanduser()
    return run.dir / "data" / data.embedded


def _training_folder(root: Path) -> Path:
    """Calibrate on training images only: ``root/Training`` when the data has that split."""
    for child in ("Training", "training", "train"):
        if (root / child).is_dir():
            return root / child
    return root


def _step_data(run: _Run, say: Callable[[str], None]) -> None:
    data = run.config.data
    root = _dataset_root(run)
    if data.path is None:
        say(f"writing the embedded synthetic {data.embedded} set")
        write_dataset(
            data.embedded, root, per_class=data.per_class, size=data.image_size,
            seed=run.config.seed, test_fraction=data.test_fraction,
        )
    index = scan_dataset(root)
    run.update_info(
        dataset={
            "name": data.embedded if data.path is None else root.resolve().name,
            "source": "embedded synthetic" if data.path is None else "folder",
            "classes": list(index.classes),
            "images": {split: len(items) for split, items in index.splits.items()},
        }
    )


def _load_key(run: _Run, preset: str) -> Key:
    path = run.key_path(preset)
    expected = run.info["keys"].get(preset)
    if not path.is_file():
        raise StudyError(
            f"{path}: the {preset} key of this study is missing from the keys folder; without "
            "it the study cannot resume (pass --restart to start again with new keys)"
        )
    key = Key.load(path)
    if expected is not None and key.fingerprint != expected:
        raise StudyError(f"{path}: fingerprint {key.fingerprint} is not this study's {expected}")
    return key


def _step_keys(run: _Run, say: Callable[[str], None]) -> None:
    cfg = run.config.obfuscation
    ensure_key_folder(run.keys_dir)
    root = _dataset_root(run)
    fingerprints: dict[str, str] = {}
    for preset in run.config.presets:
        path = run.key_path(preset)
        ensure_not_in_output(path, run.dir)
        if path.is_file():
            fingerprints[preset] = Key.load(path).fingerprint
            continue
        key = generate_key(**run.config.scheme(preset).to_dict())
        if key.params.needs_calibration:
            say(f"calibrating the {preset} key")
            key = calibrate(
                key,
                load_calibration_images(
                    _training_folder(root), count=cfg.calibration_images,
                    options=LoadOptions(size=cfg.size), seed=run.config.seed,
                ),
            )
        key.save(path)
        fingerprints[preset] = key.fingerprint
    run.update_info(keys=fingerprints)


def _step_obfuscate(run: _Run, say: Callable[[str], None]) -> None:
    root = _dataset_root(run)
    throughput = {}
    for preset in run.config.presets:
        say(f"obfuscating the data set with the {preset} key")
        result = obfuscate_dataset(
            root, key=_load_key(run, preset), output=run.dir / "stores" / preset,
            device=run.config.device,
        )
        throughput[preset] = {
            "images": result.images,
            "seconds": result.seconds,
            "images_per_second": result.images_per_second,
            "skipped": len(result.skipped),
        }
    atomic_write_json(run.dir / "metrics" / "obfuscation.json", throughput)


def _examples(run: _Run, count: int) -> tuple[np.ndarray, list[str]]:
    """One image per class (the first of each), at the working size."""
    index = scan_dataset(_dataset_root(run))
    items = [item for items in index.splits.values() for item in items]
    options = LoadOptions(size=run.config.obfuscation.size)
    images, labels = [], []
    for label, name in enumerate(index.classes[:count]):
        item = next(i for i in items if i.label == label)
        images.append(load_image(index.root / item.path, options=options))
        labels.append(name)
    return np.stack(images), labels


def _step_pipeline(run: _Run, say: Callable[[str], None]) -> None:
    if not {Preset.SVD, Preset.MULTISTAGE} <= set(run.config.presets):
        return  # the figure sets the method's stages beside the prior scheme's
    images, labels = _examples(run, count=4)
    fig = pipeline_figure(
        images, labels,
        svd=Obfuscator(_load_key(run, Preset.SVD)),
        # Fresh noise: the figure shows originals beside outputs (never a reproducible seed).
        multistage=Obfuscator(_load_key(run, Preset.MULTISTAGE)),
    )
    save_figure(fig, run.dir / "figures" / "pipeline.png", dpi=100)


def _step_efficiency(run: _Run, say: Callable[[str], None]) -> None:
    cfg = run.config.efficiency
    images = torch.from_numpy(
        load_calibration_images(
            _dataset_root(run), count=cfg.images,
            options=LoadOptions(size=run.config.obfuscation.size), seed=run.config.seed,
        )
    )
    device = resolve_device(run.config.device)
    rows = []
    for preset in run.config.presets:
        say(f"timing the {preset} stages on {len(images)} images")
        timings = stage_timings(
            _load_key(run, preset), images, batch_size=cfg.batch_size, repeats=cfg.repeats,
            device=device,
        )
        rows += [
            {"preset": preset, "stage": stage, "ms_per_image": ms,
             "images_per_second": 1000.0 / ms if ms > 0 else float("inf"),
             "images": len(images), "device": str(device)}
            for stage, ms in timings.items()
        ]
    atomic_write_json(run.dir / "metrics" / "stage_timings.json", rows)


def _step_train(run: _Run, say: Callable[[str], None]) -> None:
    root = _dataset_root(run)
    for scheme in ("plaintext", *run.config.presets):
        data = root if scheme == "plaintext" else run.dir / "stores" / scheme
        for model in run.config.training.models:
            run_dir = run.dir / "train" / scheme / model
            if (run_dir / "evaluation" / "metrics.json").is_file():
                continue
            resume = (run_dir / "last.pt").is_file()
            if not resume and run_dir.exists():
                shutil.rmtree(run_dir)  # stopped before its first checkpoint: start it clean
            say(f"training {model} on {scheme}" + (" (resuming)" if resume else ""))
            config = run.config.train_config(model)

            def report(event: Any, label: str = f"{model} on {scheme}") -> None:
                if event.kind == "step":
                    say(
                        f"training {label}: epoch {event.epoch}/{event.epochs} step "
                        f"{event.step}/{event.steps} loss {event.loss:.3f}"
                    )

            train(data, config=config, run_dir=run_dir, resume=resume, progress=report)
            evaluate(run_dir, data, device=run.config.device).save(run_dir / "evaluation")


def _step_sweep(run: _Run, say: Callable[[str], None]) -> None:
    cfg = run.config.sweep
    out = run.dir / "sweep"
    if not cfg.ranks or Preset.MULTISTAGE not in run.config.presets:
        return  # the sweep varies the rank of the study's multistage key
    if out.exists():
        shutil.rmtree(out)  # an interrupted sweep starts again: its per-k keys lived in memory
    key = _load_key(run, Preset.MULTISTAGE)

    def report(k: int, event: Any) -> None:
        if event.kind == "step":
            say(f"rank sweep k={k}: epoch {event.epoch}/{event.epochs} step {event.step}")

    sweep_rank(
        _dataset_root(run), ranks=cfg.ranks, key=key,
        config=run.config.train_config(cfg.model, epochs=cfg.epochs), out_dir=out,
        progress=report,
    )


def _step_privacy(run: _Run, say: Callable[[str], None]) -> None:
    config = run.config.privacy_config()
    for preset in run.config.presets:
        run_privacy(
            _dataset_root(run), key=_load_key(run, preset), config=config,
            output=run.dir / "privacy" / preset,
            progress=lambda message, preset=preset: say(f"attacks on {preset}: {message}"),
        )


_STEP_FUNCTIONS: dict[str, Callable[[_Run, Callable[[str], None]], None]] = {
    "data": _step_data,
    "keys": _step_keys,
    "obfuscate": _step_obfuscate,
    "pipeline": _step_pipeline,
    "efficiency": _step_efficiency,
    "train": _step_train,
    "sweep": _step_sweep,
    "privacy": _step_privacy,
}


def run_study(
    config: StudyConfig,
    *,
    run_dir: str | Path,
    keys_dir: str | Path,
    restart: bool = False,
    progress: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run (or resume) the whole study and write its report.

    Parameters
    ----------
    config : StudyConfig
        The resolved configuration (:func:`medveil.study.load_config`).
    run_dir : str or Path
        The run folder: new, empty, or a study started with the same configuration (presets
        as :func:`~medveil.study.presets.resumed_presets` says).
    keys_dir : str or Path
        Folder for the study's key files, one per preset (created owner-only); must not lie
        inside ``run_dir`` or any other medveil output.
    restart : bool, default False
        Delete an existing study in ``run_dir`` (recognised by its ``study.json``) first.
    progress : callable, optional
        Called with a short message as the study advances.

    Raises
    ------
    StudyError
        ``run_dir`` holds something else, or a study with another configuration; a key of a
        resumed study is missing; ``keys_dir`` is inside an output folder.

    Examples
    --------
    The configuration comes from :func:`medveil.study.load_config` (the ``--quick`` profile
    and ``--set``-style overrides here). The run itself is shown but not executed: on the
    embedded data it takes minutes, longer than an example may (``tests/test_study.py`` runs
    a shrunk study end to end).

    >>> from medveil.study import load_config, run_study
    >>> config = load_config(
    ...     quick=True, overrides=["training.models=[smallcnn]", "training.epochs=2"]
    ... )
    >>> config.data.embedded, config.training.models, config.training.epochs
    ('brain-mri', ('smallcnn',), 2)
    >>> result = run_study(config, run_dir="study-run", keys_dir="study-keys")  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    study in study-run: report study-run/report.html
    ...
    """
    run_dir = Path(run_dir).expanduser()
    keys_dir = Path(keys_dir).expanduser()
    say = progress or (lambda message: None)
    ensure_not_in_output(keys_dir / "study.key", run_dir)
    if restart and (run_dir / "study.json").is_file():
        shutil.rmtree(run_dir)
    run = _Run(run_dir, keys_dir, config)
    run.open()
    done = run.steps()
    for name in STEPS:
        if name in done:
            continue
        started = time.perf_counter()
        _STEP_FUNCTIONS[name](run, say)
        run.finish_step(name, time.perf_counter() - started)
    run.update_info(finished=datetime.now(UTC).isoformat(timespec="seconds"))
    say("collecting metrics and writing the report")
    report = write_report(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return StudyResult(run_dir=run_dir, report=report, metrics=metrics)
