"""The training loop: seeded, early-stopped, checkpointed every epoch, resumable exactly.

:func:`train` prepares the data once (:func:`medveil.training.data.prepare_data`), builds the
model, optimiser and schedule (:mod:`~medveil.training.optim`), and runs the epochs
(:mod:`~medveil.training.epochs`: selection of ``best.pt`` and early stopping), writing the run
folder (:mod:`~medveil.training.checkpoints`) after each. A killed run leaves the previous
epoch's checkpoint intact, and ``resume=True`` continues from it with the same result as an
uninterrupted run: shuffling and augmentation draw from a generator seeded by
``(seed, epoch)``, and the global torch RNG state (dropout) is restored from the checkpoint
(:mod:`~medveil.training.determinism`). The settings are a :class:`TrainConfig`
(:mod:`~medveil.training.config`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from medveil.errors import RunError
from medveil.machine import resolve_device
from medveil.training.checkpoints import (
    check_resumable,
    check_run_folder,
    read_checkpoint,
    restore,
    run_info,
    save_epoch,
    start_run_folder,
    write_run_info,
)
from medveil.training.config import TrainConfig
from medveil.training.data import DataSource, Standardisation, prepare_data
from medveil.training.determinism import deterministic, epoch_generator, rng_state
from medveil.training.distributed import Cluster, joined
from medveil.training.epochs import Clock, EpochStats, LoopState, evaluate_loss, train_epoch
from medveil.training.models import create_model, get_spec
from medveil.training.optim import make_optimizer, make_scheduler, warmup_epochs
from medveil.training.stems import fit_stem, get_stem_spec

__all__ = ["EpochStats", "ProgressEvent", "TrainConfig", "TrainResult", "train"]


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


def _fit_start(
    model: torch.nn.Module, train_set: Dataset[Any], *, config: TrainConfig, cluster: Cluster,
    device: torch.device,
) -> None:
    """Start a fitted stem (:func:`medveil.training.stems.fit_stem`) on the training split.

    Each process reads its own part of the split and the sums are all-reduced, so every process
    computes the same start from the whole split (and DDP then broadcasts process 0's
    parameters anyway). The loader draws its base seed from its own generator, not the global
    RNG, so the backbone's dropout draws are those of a run with another stem.
    """
    loader = DataLoader(
        cluster.shard(train_set), batch_size=config.batch_size * 2,
        num_workers=config.num_workers, generator=torch.Generator(),
    )
    fit_stem(
        model.stem, lambda: (x for x, _ in loader), total=cluster.sum_tensor,
        device=device if device.type == "cuda" else "cpu",  # float64 eigh: not on MPS
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
    saved_plan, saved_identity = check_run_folder(
        run_dir, resume=resume, world_size=cluster.world_size
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
    checkpoint: dict[str, Any] | None = None
    if resume:
        check_resumable(run_dir, config)
        checkpoint = read_checkpoint(run_dir)

    train_set = prepared.sets["train"]
    batches = cluster.plan(len(train_set), batch_size=config.batch_size)
    steps = batches.steps
    info = run_info(
        config, source, prepared.standardisation, plan, device, prepared.in_shape,
        cluster.world_size,
    )

    cluster.barrier()  # every process has checked run_dir before process 0 writes to it
    if checkpoint is None and cluster.is_main:
        start_run_folder(run_dir, config=config, plan=plan, info=info)

    with deterministic():
        torch.manual_seed(config.seed)
        model = create_model(
            config.model, num_classes=len(source.classes), input_size=config.input_size,
            weights=config.weights, stem=config.stem, in_shape=prepared.in_shape,
        ).to(device)
        if checkpoint is None and get_stem_spec(config.stem).fitted:
            # A resumed run's stem comes from its checkpoint: the fit is its first epoch's start.
            _fit_start(model, prepared.sets["train"], config=config, cluster=cluster, device=device)
        if cluster.rank:  # the other processes' own dropout draws
            torch.manual_seed(cluster.rng_seed(config.seed))
        optimizer = make_optimizer(model, config)
        scheduler = make_scheduler(optimizer, config, total_steps=config.epochs * steps)
        state = LoopState()
        if checkpoint is not None:
            state = restore(
                checkpoint, model=model, optimizer=optimizer, scheduler=scheduler,
                rank=cluster.rank, device=device,
            )
        net = cluster.wrap(model)

        val_loader = DataLoader(
            cluster.shard(prepared.sets["val"]), batch_size=config.batch_size * 2,
            num_workers=config.num_workers,
        )
        first_epoch = len(state.history) + 1
        clock = Clock(pending=(config.epochs - first_epoch + 1) * steps)
        for epoch in range(first_epoch, config.epochs + 1):
            if state.stopped:
                break
            epoch_start = time.perf_counter()
            generator = epoch_generator(config.seed, epoch, cluster.rank)
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

            train_loss, train_acc = train_epoch(
                net, loader, optimizer=optimizer, scheduler=scheduler, augment=config.augment,
                generator=generator, device=device, on_step=on_step, cluster=cluster,
            )
            cluster.sync_buffers(model)
            val_loss, val_acc = evaluate_loss(model, val_loader, device, cluster)
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
            rngs = cluster.gather(rng_state(device))
            state.wall_time_s = state.earlier_wall_s + time.perf_counter() - started
            if not cluster.is_main:
                continue
            save_epoch(
                run_dir, stats=stats, improved=improved, model=model, optimizer=optimizer,
                scheduler=scheduler, rngs=rngs, distributed=cluster.distributed, state=state,
            )
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
        write_run_info(run_dir, info)
    cluster.barrier()  # the run folder is complete when train() returns on any process
    return TrainResult(
        run_dir=run_dir, history=state.history, best_epoch=state.best_epoch,
        best_val_loss=state.best_loss, val_accuracy=best.val_acc, stopped_early=state.stopped,
        wall_time_s=info["wall_time_s"], split_sizes=plan.sizes(),
    )
