"""The training loop: seeded, early-stopped, checkpointed every epoch, resumable exactly.

A run folder holds::

    config.json    the resolved :class:`TrainConfig`
    splits.json    the train/val/test indices (positions in the data's tables, no names)
    run.json       model, classes, data kind and identity, the key's public provenance
                   (fingerprint, preset, parameters; never key material), standardisation
                   constants, split sizes, status and best epoch
    history.csv    one row per finished epoch
    best.pt        weights of the selected epoch (highest validation accuracy, see below)
    last.pt        everything needed to continue: weights, optimizer, scheduler, RNG, history

Every file is written to a temporary name and renamed into place, so a killed run leaves the
previous epoch's checkpoint intact, and ``resume=True`` continues from it with the same result
as an uninterrupted run: shuffling and augmentation draw from a generator seeded by
``(seed, epoch)``, and the global torch RNG state (dropout) is restored from the checkpoint.

The recipe's epoch selection and early stopping were chosen by measurement (issue 12 in the
project's tracker; numbers in ``docs/RESULTS.md``). Under the one-cycle schedule the validation
loss of a model trained on obfuscated arrays is erratic while the learning rate is high (on brain
MRI: 0.97, 6.3, 2.4, 1.6, 3.3, 1.7 over six epochs while training accuracy rose to 0.86), so
stopping on the loss with a fixed patience kept a first-epoch model. Two rules fix it:

- the selected epoch (``best.pt``) is the one with the highest validation *accuracy* (ties go
  to the lower loss), which a single over-confident batch cannot swing the way it swings the
  loss (``selection="val_loss"`` restores the old rule);
- epochs up to the learning-rate peak (the one-cycle warm-up) never count against ``patience``:
  a model cannot be judged before it has been trained at the full rate.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import medveil
from medveil.atomic import atomic_write_bytes, atomic_write_json
from medveil.errors import ConfigError, RunError
from medveil.machine import describe, resolve_device
from medveil.outputs import mark_output
from medveil.training.data import (
    AUGMENTATIONS,
    DataSource,
    SplitPlan,
    Standardisation,
    augment_batch,
    prepare_data,
)
from medveil.training.distributed import Cluster, joined
from medveil.training.models import create_model, get_spec
from medveil.training.stems import STEMS, default_stem

__all__ = ["EpochStats", "ProgressEvent", "TrainConfig", "TrainResult", "train"]

CHECKPOINT_FORMAT = "medveil-checkpoint"
RUN_FORMAT = "medveil-run"
RUN_VERSION = 1
# Settings that may change between an interrupted run and its resumption without changing
# the result (on CPU; a different device gives a different but valid run).
_RESUMABLE_CHANGES = ("device", "num_workers")


def _check(condition: bool, field: str, problem: str) -> None:
    if not condition:
        raise ConfigError(problem, field=field)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that determines a training run.

    Parameters
    ----------
    model : str
        ``resnet50``, ``mobilenetv2``, ``inceptionv3`` or ``smallcnn``.
    epochs : int
        Maximum number of epochs.
    batch_size : int
        Examples per optimisation step (the last incomplete batch of an epoch is dropped).
    lr, weight_decay : float
        AdamW's peak learning rate and decoupled weight decay.
    schedule : {"onecycle", "cosine"}
        Per-step learning-rate schedule: one-cycle (30% warm-up) or cosine decay to 0.
    seed : int
        Seeds the weights, the splits, shuffling and augmentation.
    device : str
        ``cpu``, ``cuda`` or ``auto``.
    patience : int or None
        Stop after this many epochs without a better validation score (see ``selection``),
        counted only after the learning-rate peak; ``None`` never stops early.
    selection : {"val_acc", "val_loss"}
        Which epoch ``best.pt`` keeps: the highest validation accuracy (ties: lower loss), or the
        lowest validation loss.
    stem : str or None
        The model's input stem (:mod:`medveil.training.stems`): ``linear`` (learned, started
        as a resize) or ``resize``; ``None`` picks ``linear`` for obfuscated data and ``resize``
        for plaintext.
    val_fraction : float
        Stratified fraction of the training data held out for validation (when the data has no
        ``val`` split of its own).
    test_fraction : float
        Stratified fraction held out for testing when the data has no ``test`` split.
    input_size : int or None
        Side of the model's square input; ``None`` takes the architecture's default.
    weights : Path or None
        Local state dict to start from (see :func:`medveil.training.models.load_weights`).
    num_workers : int
        ``DataLoader`` worker processes (0 reads in the training process).
    augment : str
        ``none`` (the default, on plaintext and obfuscated data alike: see
        :mod:`medveil.training.data` for the measurement), ``flip`` or ``flip-shift``.
    normalisation : {"dataset", "model"}
        ``dataset``: standardise with the training split's mean and std; ``model``: use the
        constants the architecture's pretrained weights expect (plaintext only).
    """

    model: str = "smallcnn"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    seed: int = 0
    device: str = "auto"
    patience: int | None = 5
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    input_size: int | None = None
    weights: Path | None = None
    num_workers: int = 0
    augment: str = "none"
    normalisation: Literal["dataset", "model"] = "dataset"
    selection: Literal["val_acc", "val_loss"] = "val_acc"
    stem: str | None = None

    def __post_init__(self) -> None:
        # Each check names its field (ConfigError.field): the study reports it as training.FIELD.
        try:
            spec = get_spec(self.model)
        except ValueError as exc:
            raise ConfigError(str(exc), field="model") from None
        _check(self.epochs >= 1, "epochs", f"must be at least 1, got {self.epochs}")
        # A batch of one example breaks batch normalisation.
        _check(self.batch_size >= 2, "batch_size", f"must be at least 2, got {self.batch_size}")
        _check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be non-negative, got {self.weight_decay}")
        _check(
            self.schedule in ("onecycle", "cosine"), "schedule",
            f"must be 'onecycle' or 'cosine', got {self.schedule!r}",
        )
        _check(
            self.patience is None or self.patience >= 1, "patience",
            f"must be at least 1 (or None to disable early stopping), got {self.patience}",
        )
        _check(
            0 < self.val_fraction < 1, "val_fraction", f"must be in (0, 1), got {self.val_fraction}"
        )
        _check(
            0 <= self.test_fraction < 1, "test_fraction",
            f"must be in [0, 1), got {self.test_fraction}",
        )
        _check(
            self.input_size is None or self.input_size >= spec.min_input_size, "input_size",
            f"must be at least {spec.min_input_size} for {self.model} (or None for its default "
            f"{spec.input_size}), got {self.input_size}",
        )
        _check(self.num_workers >= 0, "num_workers", f"must be non-negative, got {self.num_workers}")
        _check(
            self.augment in AUGMENTATIONS, "augment",
            f"must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}",
        )
        _check(
            self.normalisation in ("dataset", "model"), "normalisation",
            f"must be 'dataset' or 'model', got {self.normalisation!r}",
        )
        _check(
            self.selection in ("val_acc", "val_loss"), "selection",
            f"must be 'val_acc' or 'val_loss', got {self.selection!r}",
        )
        _check(
            self.stem is None or self.stem in STEMS, "stem",
            f"must be one of {', '.join(STEMS)} (or None), got {self.stem!r}",
        )
        if self.weights is not None:
            object.__setattr__(self, "weights", Path(self.weights))

    def resolve(self, data: DataSource) -> TrainConfig:
        """Fill in the defaults that depend on the model and the data."""
        spec = get_spec(self.model)
        if self.normalisation == "model" and data.kind != "plaintext":
            raise ConfigError(
                "normalisation='model' applies to plaintext images in [0, 1]; obfuscated data "
                "is standardised on its training split (normalisation='dataset')"
            )
        return replace(
            self,
            input_size=self.input_size or spec.input_size,
            stem=self.stem or default_stem(data.kind),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["weights"] = None if self.weights is None else str(self.weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class EpochStats:
    """One finished epoch."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class ProgressEvent:
    """What a ``progress`` callback receives, after every step and after every epoch.

    ``kind`` is ``"step"`` (``loss``/``acc`` are running means over the epoch so far) or
    ``"epoch"`` (``stats`` holds the finished epoch). ``eta_s`` estimates the seconds left.
    """

    kind: Literal["step", "epoch"]
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    acc: float
    eta_s: float
    stats: EpochStats | None = None


@dataclass
class TrainResult:
    """What :func:`train` did."""

    run_dir: Path
    history: list[EpochStats]
    best_epoch: int
    best_val_loss: float
    val_accuracy: float
    stopped_early: bool
    wall_time_s: float
    split_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def summary(self) -> str:
        return (
            f"{self.epochs_run} epoch(s){' (early stop)' if self.stopped_early else ''} in "
            f"{self.wall_time_s:.1f} s; best epoch {self.best_epoch}: val loss "
            f"{self.best_val_loss:.4f}, val accuracy {self.val_accuracy:.3f} -> {self.run_dir}"
        )


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels while training; the caller's global settings are restored after."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    # warn_only: a few CUDA kernels (e.g. adaptive pooling backward) have no deterministic
    # version; they warn instead of failing, and CPU training stays bit-exact.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[2:]


def _epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    # Process 0 (and a run alone) draws what it always drew; the others draw their own.
    entropy = [seed, epoch, 0xE90C] + ([rank] if rank else [])
    draw = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(draw))


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


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _run_info(
    config: TrainConfig, data: DataSource, standardisation: Standardisation, plan: SplitPlan,
    device: torch.device, in_shape: tuple[int, int], processes: int,
) -> dict[str, Any]:
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


def _check_resumable(run_dir: Path, config: TrainConfig) -> None:
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


def _evaluate_loss(
    model: nn.Module, loader: DataLoader, device: torch.device, cluster: Cluster
) -> tuple[float, float]:
    """Mean loss and accuracy over all processes' parts of the set in ``loader``."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
    total_loss, correct, count = cluster.sum(total_loss, correct, count)
    return total_loss / count, correct / count


@dataclass
class _LoopState:
    """The bookkeeping of the epoch loop that a checkpoint carries across a resumption."""

    history: list[EpochStats] = field(default_factory=list)
    best_loss: float = math.inf
    best_acc: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False
    earlier_wall_s: float = 0.0  # wall time of the interrupted run(s) this one continues
    wall_time_s: float = 0.0

    def record(
        self, stats: EpochStats, *, patience: int | None, selection: str, counts: bool
    ) -> bool:
        """Add a finished epoch; True when it is the best so far by ``selection``.

        ``counts`` is False for epochs that may not count against ``patience`` (the warm-up).
        """
        self.history.append(stats)
        if selection == "val_loss":
            improved = stats.val_loss < self.best_loss
        else:
            improved = stats.val_acc > self.best_acc or (
                stats.val_acc == self.best_acc and stats.val_loss < self.best_loss
            )
        if improved:
            self.best_loss, self.best_acc = stats.val_loss, stats.val_acc
            self.best_epoch, self.bad_epochs = stats.epoch, 0
        elif counts:
            self.bad_epochs += 1
        self.stopped = patience is not None and self.bad_epochs >= patience
        return improved

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "history": [asdict(h) for h in self.history], "best_val_loss": self.best_loss,
            "best_val_acc": self.best_acc, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "stopped": self.stopped, "wall_time_s": self.wall_time_s,
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> _LoopState:
        return cls(
            history=[EpochStats(**row) for row in checkpoint["history"]],
            best_loss=checkpoint["best_val_loss"],
            best_acc=checkpoint.get("best_val_acc", -math.inf), best_epoch=checkpoint["best_epoch"],
            bad_epochs=checkpoint["bad_epochs"], stopped=checkpoint["stopped"],
            earlier_wall_s=checkpoint["wall_time_s"],
        )


class _Clock:
    """Estimates the seconds left from the mean duration of the steps run so far."""

    def __init__(self, *, pending: int) -> None:
        self.pending = pending
        self.done = 0
        self.start = time.perf_counter()

    def tick(self) -> None:
        self.done += 1

    def eta_s(self) -> float:
        rate = (time.perf_counter() - self.start) / max(self.done, 1)
        return rate * max(self.pending - self.done, 0)


WARMUP_FRACTION = 0.3  # of the one-cycle schedule's steps, up to the learning-rate peak


def warmup_epochs(config: TrainConfig) -> int:
    """Epochs that end at or before the learning-rate peak (they never count against patience)."""
    if config.schedule != "onecycle":
        return 0
    return math.ceil(WARMUP_FRACTION * config.epochs)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, *, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=WARMUP_FRACTION
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    augment: str,
    generator: torch.Generator,
    device: torch.device,
    on_step: Callable[[int, float, float], None],
    cluster: Cluster,
) -> tuple[float, float]:
    """One pass over ``loader``; returns the epoch's mean loss and accuracy over all processes.

    ``on_step`` receives this process's running means.
    """
    model.train()
    total_loss, correct, count = 0.0, 0, 0
    for step, (x, y) in enumerate(loader, start=1):
        # Augmenting here, in the training process, keeps its random draws independent of the
        # number of loader workers.
        x = augment_batch(x, augment, generator=generator).to(device)
        y = y.to(device)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        count += len(y)
        on_step(step, total_loss / count, correct / count)
    total_loss, correct, count = cluster.sum(total_loss, correct, count)
    return total_loss / count, correct / count


def train(
    data: DataSource | str | Path,
    *,
    config: TrainConfig,
    run_dir: str | Path,
    progress: Callable[[ProgressEvent], None] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train a classifier on plaintext or obfuscated data and record the run in ``run_dir``.

    Parameters
    ----------
    data : DataSource, str or Path
        An obfuscated store, a plaintext image folder, or a :class:`DataSource`.
    config : TrainConfig
        The settings; the default input size is filled in and written to ``config.json``.
    run_dir : str or Path
        Output folder; must be new or empty unless ``resume``.
    progress : callable, optional
        Called with a :class:`ProgressEvent` after every step and every epoch.
    resume : bool, default False
        Continue the run in ``run_dir`` from its last checkpoint, with the same settings and
        data. A finished run is returned as it is.

    Returns
    -------
    TrainResult
        History, best epoch and its validation loss and accuracy, wall time.

    Raises
    ------
    ConfigError
        Settings that do not fit the data (``normalisation="model"`` on obfuscated arrays).
    RunError
        A non-empty ``run_dir`` without ``resume``, or a resumption whose settings or data
        differ from the original run's.
    LoadError
        Data that cannot be read, split or standardised
        (:func:`medveil.training.data.prepare_data`).

    Examples
    --------
    One epoch of the small CNN on a tiny synthetic plaintext folder (an obfuscated store is
    given the same way):

    >>> import tempfile
    >>> from pathlib import Path
    >>> from medveil.synthetic.write import write_dataset
    >>> from medveil.training import TrainConfig, train
    >>> config = TrainConfig(model="smallcnn", epochs=1, batch_size=4, input_size=32, device="cpu")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     data = write_dataset("ovary-us", Path(folder) / "data", per_class=8, size=32)
    ...     result = train(data.path, config=config, run_dir=Path(folder) / "run")
    ...     written = " ".join(sorted(path.name for path in result.run_dir.iterdir()))
    >>> result.epochs_run, result.split_sizes
    (1, {'train': 10, 'val': 2, 'test': 4})
    >>> print(written)
    .medveil-output best.pt config.json history.csv last.pt run.json splits.json

    Under a launcher (``torchrun --nproc-per-node N``) every process calls :func:`train` with the
    same arguments and trains its part of each batch with DistributedDataParallel; only process
    0 writes ``run_dir`` and calls ``progress`` (:mod:`medveil.training.distributed`).
    """
    with joined(device=config.device) as cluster:
        return _train(
            data, config=config, run_dir=run_dir, progress=progress, resume=resume,
            cluster=cluster,
        )


def _train(
    data: DataSource | str | Path,
    *,
    config: TrainConfig,
    run_dir: str | Path,
    progress: Callable[[ProgressEvent], None] | None,
    resume: bool,
    cluster: Cluster,
) -> TrainResult:
    started = time.perf_counter()
    run_dir = Path(run_dir).expanduser()
    spec = get_spec(config.model)
    checkpoint: dict[str, Any] | None = None
    saved_plan: SplitPlan | None = None
    saved_identity: str | None = None
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise RunError(f"{run_dir}: no checkpoint (last.pt) to resume from")
        saved_plan = SplitPlan.from_dict(json.loads((run_dir / "splits.json").read_text()))
        saved_info = json.loads((run_dir / "run.json").read_text())
        saved_identity = saved_info["data"]["identity"]
        # The batches, steps per epoch and schedule depend on the number of processes.
        if saved_info.get("processes", 1) != cluster.world_size:
            raise RunError(
                f"{run_dir}: the run was trained on {saved_info.get('processes', 1)} "
                f"process(es); resume it on as many (this is {cluster.world_size})"
            )
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(
            f"{run_dir}: run folder is not empty; pass resume=True to continue the run in "
            "it, or choose a new folder"
        )
    try:
        prepared = prepare_data(
            data, image_size=config.input_size or spec.input_size,
            val_fraction=config.val_fraction, test_fraction=config.test_fraction,
            seed=config.seed, plan=saved_plan, identity=saved_identity,
            standardisation=(
                Standardisation(mean=spec.mean, std=spec.std)
                if config.normalisation == "model" else None
            ),
        )
    except RunError as exc:
        raise RunError(f"{run_dir}: {exc}") from None
    source, plan = prepared.source, prepared.plan
    config = config.resolve(source)
    assert config.input_size is not None
    device = cluster.device(resolve_device(config.device))
    if resume:
        _check_resumable(run_dir, config)
        checkpoint = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)

    train_set = prepared.sets["train"]
    batches = cluster.plan(len(train_set), batch_size=config.batch_size)
    steps = batches.steps
    info = _run_info(
        config, source, prepared.standardisation, plan, device, prepared.in_shape,
        cluster.world_size,
    )

    cluster.barrier()  # every process has checked run_dir before process 0 writes to it
    if checkpoint is None and cluster.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        mark_output(run_dir, kind="training-run")  # keys are refused in here
        atomic_write_json(run_dir / "config.json", config.to_dict())
        atomic_write_json(run_dir / "splits.json", plan.to_dict())
        atomic_write_json(run_dir / "run.json", info)

    with _deterministic():
        torch.manual_seed(config.seed)
        model = create_model(
            config.model, num_classes=len(source.classes), input_size=config.input_size,
            weights=config.weights, stem=config.stem, in_shape=prepared.in_shape,
        ).to(device)
        if cluster.rank:  # the other processes' own dropout draws
            torch.manual_seed(cluster.rng_seed(config.seed))
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        scheduler = _make_scheduler(optimizer, config, total_steps=config.epochs * steps)
        state = _LoopState()
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            ranks = checkpoint.get("rng_ranks", [checkpoint["rng"]])
            _set_rng_state(ranks[cluster.rank], device)
            state = _LoopState.from_checkpoint(checkpoint)
        net = cluster.wrap(model)

        val_loader = DataLoader(
            cluster.shard(prepared.sets["val"]), batch_size=config.batch_size * 2,
            num_workers=config.num_workers,
        )
        first_epoch = len(state.history) + 1
        clock = _Clock(pending=(config.epochs - first_epoch + 1) * steps)
        for epoch in range(first_epoch, config.epochs + 1):
            if state.stopped:
                break
            epoch_start = time.perf_counter()
            generator = _epoch_generator(config.seed, epoch, cluster.rank)
            loader = cluster.train_loader(
                train_set, plan=batches, seed=config.seed, epoch=epoch, generator=generator,
                num_workers=config.num_workers,
            )

            def on_step(step: int, loss: float, acc: float, epoch: int = epoch) -> None:
                clock.tick()
                if progress is not None and cluster.is_main:
                    progress(ProgressEvent(
                        kind="step", epoch=epoch, epochs=config.epochs, step=step, steps=steps,
                        loss=loss, acc=acc, eta_s=clock.eta_s(),
                    ))

            train_loss, train_acc = _train_epoch(
                net, loader, optimizer=optimizer, scheduler=scheduler, augment=config.augment,
                generator=generator, device=device, on_step=on_step, cluster=cluster,
            )
            cluster.sync_buffers(model)
            val_loss, val_acc = _evaluate_loss(model, val_loader, device, cluster)
            stats = EpochStats(
                epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                val_acc=val_acc, lr=optimizer.param_groups[0]["lr"],
                seconds=time.perf_counter() - epoch_start,
            )
            improved = state.record(
                stats, patience=config.patience, selection=config.selection,
                counts=epoch > warmup_epochs(config),
            )
            # Every process reaches the same decisions: the scores above are all-reduced.
            rngs = cluster.gather(_rng_state(device))
            state.wall_time_s = state.earlier_wall_s + time.perf_counter() - started
            if not cluster.is_main:
                continue
            if improved:
                _atomic_torch_save(
                    run_dir / "best.pt",
                    {"model": model.state_dict(), "epoch": epoch, "val_loss": val_loss,
                     "val_acc": val_acc},
                )
            _atomic_torch_save(
                run_dir / "last.pt",
                {
                    "format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rngs[0], **({"rng_ranks": rngs} if cluster.distributed else {}),
                    **state.to_checkpoint(),
                },
            )
            _write_history(run_dir / "history.csv", state.history)
            if progress is not None:
                progress(ProgressEvent(
                    kind="epoch", epoch=epoch, epochs=config.epochs, step=steps, steps=steps,
                    loss=train_loss, acc=train_acc, eta_s=clock.eta_s(), stats=stats,
                ))

    best = next(h for h in state.history if h.epoch == state.best_epoch)
    info.update(
        status="complete", best_epoch=state.best_epoch, best_val_loss=state.best_loss,
        val_accuracy=best.val_acc, epochs_run=len(state.history), stopped_early=state.stopped,
        wall_time_s=state.earlier_wall_s + time.perf_counter() - started,
    )
    if cluster.is_main:
        atomic_write_json(run_dir / "run.json", info)
    cluster.barrier()  # the run folder is complete when train() returns on any process
    return TrainResult(
        run_dir=run_dir, history=state.history, best_epoch=state.best_epoch,
        best_val_loss=state.best_loss, val_accuracy=best.val_acc, stopped_early=state.stopped,
        wall_time_s=info["wall_time_s"], split_sizes=plan.sizes(),
    )
