"""The run folder that :func:`medveil.training.train.train` writes, and reads back to resume.

A run folder holds::

    config.json    the resolved :class:`~medveil.training.config.TrainConfig`
    splits.json    the train/val/test indices (positions in the data's tables, no names)
    run.json       model, classes, data kind and identity, the key's public provenance
                   (fingerprint, preset, parameters; never key material), standardisation
                   constants, split sizes, status and best epoch
    history.csv    one row per finished epoch
    best.pt        weights of the selected epoch (:class:`~medveil.training.epochs.LoopState`)
    last.pt        everything needed to continue: weights, optimizer, scheduler, RNG, history

Every file is written to a temporary name and renamed into place, so a killed run leaves the
previous epoch's checkpoint intact to resume from. :mod:`medveil.training.runs` reads a
finished run back.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

import medveil
from medveil.atomic import atomic_write_bytes, atomic_write_json
from medveil.errors import RunError
from medveil.machine import describe
from medveil.outputs import mark_output
from medveil.training.config import TrainConfig
from medveil.training.data import DataSource, SplitPlan, Standardisation
from medveil.training.determinism import set_rng_state
from medveil.training.epochs import EpochStats, LoopState

__all__ = [
    "CHECKPOINT_FORMAT",
    "RUN_FORMAT",
    "RUN_VERSION",
    "check_resumable",
    "check_run_folder",
    "read_checkpoint",
    "restore",
    "run_info",
    "save_epoch",
    "start_run_folder",
    "write_run_info",
]

CHECKPOINT_FORMAT = "medveil-checkpoint"
RUN_FORMAT = "medveil-run"
RUN_VERSION = 1
# Settings that may change between an interrupted run and its resumption without changing
# the result (on CPU; a different device gives a different but valid run).
_RESUMABLE_CHANGES = ("device", "num_workers")


def _atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _write_history(path: Path, history: list[EpochStats]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[f.name for f in fields(EpochStats)])
    writer.writeheader()
    writer.writerows(asdict(row) for row in history)
    atomic_write_bytes(path, text.getvalue().encode())


def check_run_folder(
    run_dir: Path, *, resume: bool, world_size: int
) -> tuple[SplitPlan | None, str | None]:
    """Check ``run_dir`` before a run: new or empty, or (``resume``) one to continue.

    Returns the saved split plan and data identity of the run to continue (``None, None`` for
    a new run); raises :class:`~medveil.errors.RunError` for a folder that is neither.
    """
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise RunError(f"{run_dir}: no checkpoint (last.pt) to resume from")
        saved_plan = SplitPlan.from_dict(json.loads((run_dir / "splits.json").read_text()))
        saved_info = json.loads((run_dir / "run.json").read_text())
        # The batches, steps per epoch and schedule depend on the number of processes.
        if saved_info.get("processes", 1) != world_size:
            raise RunError(
                f"{run_dir}: the run was trained on {saved_info.get('processes', 1)} "
                f"process(es); resume it on as many (this is {world_size})"
            )
        return saved_plan, saved_info["data"]["identity"]
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(
            f"{run_dir}: run folder is not empty; pass resume=True to continue the run in "
            "it, or choose a new folder"
        )
    return None, None


def check_resumable(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to resume the run in ``run_dir`` with settings that would change its result."""
    saved = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    differs = [
        f.name for f in fields(TrainConfig)
        if f.name not in _RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)
    ]
    if differs:
        raise RunError(
            f"{run_dir}: cannot resume with different settings ({', '.join(differs)}); "
            "use the original settings or a new run folder"
        )


def read_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The last checkpoint (``last.pt``) of the run in ``run_dir``, on the CPU."""
    return torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)


def restore(
    checkpoint: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int,
    device: torch.device,
) -> LoopState:
    """Load ``checkpoint`` into the run's objects and this process's RNG; its loop state."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    ranks = checkpoint.get("rng_ranks", [checkpoint["rng"]])
    set_rng_state(ranks[rank], device)
    return LoopState.from_checkpoint(checkpoint)


def run_info(
    config: TrainConfig, data: DataSource, standardisation: Standardisation, plan: SplitPlan,
    device: torch.device, in_shape: tuple[int, int], processes: int,
) -> dict[str, Any]:
    """What ``run.json`` says of a run while it runs (``status`` ``running``)."""
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "medveil_version": medveil.__version__,
        "model": config.model,
        "input_size": config.input_size,
        "stem": config.stem,
        "in_shape": list(in_shape),
        "classes": list(data.classes),
        "data": {"kind": data.kind, "identity": data.identity, **data.provenance},
        "standardisation": asdict(standardisation),
        "splits": plan.sizes(),
        "device": str(device),
        "processes": processes,
        "machine": describe(),
        "status": "running",
    }


def start_run_folder(
    run_dir: Path, *, config: TrainConfig, plan: SplitPlan, info: dict[str, Any]
) -> None:
    """Create ``run_dir`` with its marker, ``config.json``, ``splits.json`` and ``run.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    mark_output(run_dir, kind="training-run")  # keys are refused in here
    atomic_write_json(run_dir / "config.json", config.to_dict())
    atomic_write_json(run_dir / "splits.json", plan.to_dict())
    atomic_write_json(run_dir / "run.json", info)


def save_epoch(
    run_dir: Path,
    *,
    stats: EpochStats,
    improved: bool,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rngs: list[dict[str, Any]],
    distributed: bool,
    state: LoopState,
) -> None:
    """Write a finished epoch: ``best.pt`` when it ``improved``, ``last.pt``, ``history.csv``.

    ``rngs`` holds every process's RNG state, process 0's first.
    """
    if improved:
        _atomic_torch_save(
            run_dir / "best.pt",
            {"model": model.state_dict(), "epoch": stats.epoch, "val_loss": stats.val_loss,
             "val_acc": stats.val_acc},
        )
    _atomic_torch_save(
        run_dir / "last.pt",
        {
            "format": CHECKPOINT_FORMAT, "epoch": stats.epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": rngs[0], **({"rng_ranks": rngs} if distributed else {}),
            **state.to_checkpoint(),
        },
    )
    _write_history(run_dir / "history.csv", state.history)


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    """Replace ``run.json`` (at the end of a run, with its status and best epoch)."""
    atomic_write_json(run_dir / "run.json", info)
