"""Training on several processes: the plumbing of DistributedDataParallel for the training loop.

:func:`medveil.training.train.train` joins the process group that a launcher describes
(``torchrun --nproc-per-node N -m medveil train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address), or one its caller has already initialised, and
otherwise runs alone. The backend is ``gloo`` on the CPU and ``nccl`` on CUDA, where process
``LOCAL_RANK`` drives ``cuda:LOCAL_RANK``.

What changes with ``N`` processes, and what does not:

- ``batch_size`` stays the *global* batch: each process takes ``batch_size / N`` examples per
  step from its part of a :class:`~torch.utils.data.DistributedSampler` (reshuffled per epoch
  by ``(seed, epoch)``, so a resumed run draws what the uninterrupted one drew), and DDP
  averages the gradients. Steps per epoch, the learning-rate schedule and the optimiser see
  the same numbers as in one process; batch normalisation sees its process's ``batch_size / N``
  examples (its running statistics are process 0's, broadcast before every forward pass).
- Validation: every process scores its own ``1/N`` of the validation set (every ``N``-th
  example, no padding, so nothing is counted twice) with process 0's weights and buffers, and
  the summed loss, correct count and example count are all-reduced. Every process therefore
  sees the same validation score as one process would compute for those weights, and all of
  them take the same epoch-selection and early-stopping decisions. The test set is scored
  after training by ``medveil evaluate``, in one process.
- Only process 0 (:attr:`Cluster.is_main`) writes the run folder (config, splits, run.json,
  history, checkpoints) and reports progress. The checkpoint carries every process's RNG
  state, and every process reads the checkpoint on ``resume``: the run folder must be visible
  to all processes (one machine, or a shared file system).

Examples
--------
Outside a launcher a process is a world of one:

>>> from medveil.training.distributed import joined
>>> with joined(device="cpu") as cluster:
...     print(cluster.rank, cluster.world_size, cluster.is_main, cluster.sum(1.0, 2.0))
0 1 True (1.0, 2.0)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from medveil.errors import ConfigError
from medveil.machine import resolve_device

__all__ = ["BatchPlan", "Cluster", "joined", "launched", "main_process"]

# The launcher's variables (torchrun and torch.multiprocessing users set the same ones).
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether a launcher such as ``torchrun`` started this process as one of several."""
    return all(name in os.environ for name in _LAUNCH_VARIABLES) and int(
        os.environ["WORLD_SIZE"]
    ) > 1


def main_process() -> bool:
    """Whether this process is process 0 of its launcher, or alone (it reports to the user)."""
    return not launched() or int(os.environ["RANK"]) == 0


@dataclass(frozen=True, kw_only=True)
class BatchPlan:
    """How one epoch is cut into steps on each process.

    ``batch_size`` is the per-process batch, ``steps`` the optimisation steps per epoch (the
    same on every process: DDP needs every process in every step), ``drop_last`` whether the
    last incomplete batch is dropped (always, unless the data fits in one batch).
    """

    batch_size: int
    steps: int
    drop_last: bool


@dataclass(frozen=True, kw_only=True)
class Cluster:
    """This process's place among the training processes (a world of one when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes the run folder and reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, device: torch.device) -> torch.device:
        """The device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` among several."""
        if device.type == "cuda" and self.distributed and device.index is None:
            device = torch.device("cuda", self.local_rank)
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)  # nccl's collectives run on the current device
        return device

    def plan(self, size: int, *, batch_size: int) -> BatchPlan:
        """Steps per epoch of ``size`` training examples at a global ``batch_size``.

        Raises
        ------
        ConfigError
            A ``batch_size`` that does not split into at least two examples per process.
        """
        if batch_size % self.world_size or batch_size // self.world_size < 2:
            raise ConfigError(
                f"must be a multiple of the number of processes ({self.world_size}) with at "
                f"least 2 examples per process, got {batch_size}",
                field="batch_size",
            )
        per_process = batch_size // self.world_size
        # DistributedSampler (without drop_last) pads the data to a multiple of the world size.
        shard = -(-size // self.world_size)
        drop_last = shard > per_process  # a batch of one would break batch norm
        return BatchPlan(
            batch_size=per_process, steps=shard // per_process if drop_last else 1,
            drop_last=drop_last,
        )

    def train_loader(
        self, dataset: Dataset[Any], *, plan: BatchPlan, seed: int, epoch: int,
        generator: torch.Generator, num_workers: int,
    ) -> DataLoader[Any]:
        """This process's shuffled batches of ``epoch``.

        Alone: a shuffle drawn from ``generator``. Among several: this process's part of a
        :class:`~torch.utils.data.DistributedSampler` seeded by ``seed`` and set to ``epoch``,
        so that the parts are disjoint and a resumed run reshuffles as the original did.
        """
        if not self.distributed:
            return DataLoader(
                dataset, batch_size=plan.batch_size, shuffle=True, drop_last=plan.drop_last,
                generator=generator, num_workers=num_workers,
            )
        sampler = DistributedSampler(
            dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed
        )
        sampler.set_epoch(epoch)
        return DataLoader(
            dataset, batch_size=plan.batch_size, sampler=sampler, drop_last=plan.drop_last,
            num_workers=num_workers,
        )

    def shard(self, dataset: Dataset[Any]) -> Dataset[Any]:
        """Every ``world_size``-th example from ``rank`` on: disjoint parts that cover the set."""
        if not self.distributed:
            return dataset
        return Subset(dataset, range(self.rank, len(dataset), self.world_size))  # type: ignore[arg-type]

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train: ``model`` itself alone, a DDP wrapper of it among several."""
        if not self.distributed:
            return model
        device = next(model.parameters()).device
        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every process process 0's buffers (batch norm statistics) before scoring.

        DDP broadcasts them at the start of each training step, so after the last step each
        process holds the statistics of its own last batch; the checkpoint keeps process 0's.
        """
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def sum(self, *values: float) -> tuple[float, ...]:
        """The sums of ``values`` over all processes (float64, the same on every process)."""
        total = self.sum_tensor(torch.tensor(values, dtype=torch.float64))
        return tuple(float(v) for v in total)

    def sum_tensor(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed elementwise over all processes, on ``value``'s device (the same
        tensor on every process; ``value`` itself when alone)."""
        if not self.distributed:
            return value
        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" \
            else torch.device("cpu")
        total = value.to(device, copy=True)
        dist.all_reduce(total)
        return total.to(value.device)

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every process, by rank (a list of one when alone)."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def rng_seed(self, seed: int) -> int:
        """A seed of this process's own random draws (dropout), derived from ``seed``."""
        return int(np.random.SeedSequence([seed, self.rank, 0xDD9]).generate_state(1)[0])


@contextlib.contextmanager
def joined(*, device: str) -> Iterator[Cluster]:
    """This process's :class:`Cluster` for the duration of a training run.

    Uses the default process group if the caller has initialised one, initialises it from the
    launcher's environment (:func:`launched`) otherwise, and destroys what it initialised on
    exit. ``device`` picks the backend: ``nccl`` for CUDA, ``gloo`` for the CPU.
    """
    created = False
    if not dist.is_initialized() and launched():
        backend = "nccl" if resolve_device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        created = True
    if not dist.is_initialized():
        yield Cluster()
        return
    try:
        yield Cluster(
            rank=dist.get_rank(), world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
            backend=dist.get_backend(),
        )
    finally:
        if created:
            dist.destroy_process_group()
