"""Accuracy against the rank k: one model per k on data obfuscated with the same secret.

For every k the base key's parameters are kept except the rank (``Key.with_params``), the key is
calibrated on the training images only, the whole dataset is obfuscated in memory, a model is
trained with the same :class:`~medveil.training.train.TrainConfig` and scored on the same
held-out test split. The per-k keys live only in memory; the run folders record fingerprints.

What the per-k keys share: under ``medveil-derive-v2`` (every key drawn now) the rank is bound
into the derivation of the keyed matrices, so each k gets its own ``R_L`` and ``R_R``,
independent of the other ranks' as if each k had its own key; only the secret they are derived
from is shared. A key loaded from an older (``medveil-derive-v1``) file keeps its own
derivation: its ``R_L`` is then the same at every k and ``R_R`` at a lower k is a rescaled
slice of the one at a higher k, so the ranks differ by the truncation alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medveil.atomic import atomic_write_bytes
from medveil.calibration import calibrate
from medveil.errors import ConfigError, LoadError
from medveil.keys import Key, Preset
from medveil.outputs import mark_output
from medveil.training.data import DataSource, MemoryTable, obfuscate_source, open_data, plan_splits
from medveil.training.evaluate import evaluate
from medveil.training.train import ProgressEvent, TrainConfig, TrainResult, train

__all__ = ["SweepResult", "sweep_rank"]


@dataclass(frozen=True)
class SweepResult:
    """The accuracy-against-k table, where it was written, and each rank's training result."""

    table: pd.DataFrame
    csv: Path
    plot: Path
    runs: dict[int, TrainResult]


def _in_memory(source: DataSource) -> DataSource:
    tables = {
        name: MemoryTable(table.arrays(np.arange(len(table.labels))), table.labels)
        for name, table in source.tables.items()
    }
    return DataSource(
        kind=source.kind, classes=source.classes, tables=dict(tables), identity=source.identity
    )


def sweep_rank(
    data: DataSource | str | Path,
    *,
    ranks: Sequence[int],
    key: Key,
    config: TrainConfig,
    out_dir: str | Path,
    noise_seed: int | None = None,
    progress: Callable[[int, ProgressEvent], None] | None = None,
) -> SweepResult:
    """Train one model per rank and tabulate test accuracy against k.

    Parameters
    ----------
    data : DataSource, str or Path
        Plaintext images: a Kaggle-layout folder, or an in-memory :class:`DataSource` whose
        images are ``key.params.size`` pixels square. Loaded into memory once.
    ranks : sequence of int
        The values of k, each in ``[1, key.params.size]``.
    key : Key
        Base key: its secret and parameters (preset, bits, noise, projections) are used for
        every k; only the rank changes, and with it (under ``medveil-derive-v2``) every keyed
        matrix. Calibration is redone per k on the training images.
    config : TrainConfig
        Training settings shared by every rank (same split, same budget).
    out_dir : str or Path
        Receives ``rank-<k>/`` run folders (each with its ``evaluation/``),
        ``accuracy_vs_rank.csv`` and ``accuracy_vs_rank.png``.
    noise_seed : int, optional
        Pins the obfuscation noise, for tests only.
    progress : callable, optional
        Called with ``(k, event)`` for every training progress event.

    Returns
    -------
    SweepResult
        ``table`` has one row per k: ``rank``, ``test_accuracy``, ``test_macro_f1``,
        ``val_accuracy``, ``best_epoch``, ``epochs_run``, ``wall_time_s``, ``key_fingerprint``.
    """
    ranks = sorted({int(k) for k in ranks})
    size = key.params.size
    if not ranks or ranks[0] < 1 or ranks[-1] > size:
        raise ConfigError(f"ranks must be a non-empty list of integers in [1, {size}]")
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    mark_output(out_dir, kind="rank-sweep")  # keys are refused in here
    source = open_data(data, image_size=size)
    if source.kind != "plaintext":
        raise ConfigError("a rank sweep starts from plaintext images (a folder or arrays)")
    plain = _in_memory(source)
    shapes = {table.arrays([0]).shape[1:] for table in plain.tables.values() if len(table.labels)}
    if shapes != {(size, size)}:
        raise LoadError(f"the images must be {size}x{size} (the key's size), got {sorted(shapes)}")
    # The plan depends only on labels and seed, so it is the same for the plaintext and for
    # every obfuscated version: calibration sees exactly the images each model trains on.
    plan = plan_splits(
        plain, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
        seed=config.seed,
    )
    train_table, train_idx = plan.parts["train"]
    calibration_images = plain.tables[train_table].arrays(train_idx)

    rows, runs = [], {}
    for k in ranks:
        key_k = key.with_params(rank=k)
        if key_k.params.preset is Preset.MULTISTAGE:
            key_k = calibrate(key_k, calibration_images)
        obfuscated = obfuscate_source(plain, key=key_k, noise_seed=noise_seed)
        run_dir = out_dir / f"rank-{k:03d}"
        report = None if progress is None else (lambda event, k=k: progress(k, event))
        result = train(obfuscated, config=config, run_dir=run_dir, progress=report)
        evaluation = evaluate(run_dir, obfuscated, device=config.device)
        evaluation.save(run_dir / "evaluation")
        runs[k] = result
        rows.append({
            "rank": k,
            "test_accuracy": evaluation.accuracy,
            "test_macro_f1": evaluation.macro_f1,
            "val_accuracy": result.val_accuracy,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "wall_time_s": result.wall_time_s,
            "key_fingerprint": key_k.fingerprint,
        })
    table = pd.DataFrame(rows)
    csv_path, png_path = out_dir / "accuracy_vs_rank.csv", out_dir / "accuracy_vs_rank.png"
    atomic_write_bytes(csv_path, table.to_csv(index=False).encode())
    atomic_write_bytes(png_path, _plot(table, preset=str(key.params.preset), model=config.model))
    return SweepResult(table=table, csv=csv_path, plot=png_path, runs=runs)


def _plot(table: pd.DataFrame, *, preset: str, model: str) -> bytes:
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(table["rank"], table["test_accuracy"], marker="o", label="test accuracy")
    ax.plot(table["rank"], table["test_macro_f1"], marker="s", linestyle="--", label="macro-F1")
    ax.set_xscale("log", base=2)
    ax.set_xticks(table["rank"], [str(k) for k in table["rank"]])
    ax.set_ylim(0, 1)
    ax.set_xlabel("rank k")
    ax.set_ylabel("score on the held-out test split")
    ax.set_title(f"{model} on the '{preset}' preset")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
