"""One epoch of training and of validation scoring, and the bookkeeping across epochs.

The recipe's epoch selection and early stopping were chosen by measurement (issue 12 in the
project's tracker; numbers in ``docs/RESULTS.md``). Under the one-cycle schedule the validation
loss of a model trained on obfuscated arrays is erratic while the learning rate is high (on brain
MRI: 0.97, 6.3, 2.4, 1.6, 3.3, 1.7 over six epochs while training accuracy rose to 0.86), so
stopping on the loss with a fixed patience kept a first-epoch model. Two rules fix it
(:class:`LoopState`):

- the selected epoch (``best.pt``) is the one with the highest validation *accuracy* (ties go
  to the lower loss), which a single over-confident batch cannot swing the way it swings the
  loss (``selection="val_loss"`` restores the old rule);
- epochs up to the learning-rate peak (the one-cycle warm-up,
  :func:`medveil.training.optim.warmup_epochs`) never count against ``patience``: a model
  cannot be judged before it has been trained at the full rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from medveil.training.data import augment_batch
from medveil.training.distributed import Cluster

__all__ = ["Clock", "EpochStats", "LoopState", "evaluate_loss", "train_epoch"]


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



@dataclass
class LoopState:
    """The bookkeeping of the epoch loop that a checkpoint carries across a resumption.

    Examples
    --------
    Epoch 2 ties epoch 1's accuracy at a lower loss, epoch 3 scores higher, epoch 4 lower:

    >>> state = LoopState()
    >>> for epoch, (loss, acc) in enumerate([(0.9, 0.6), (0.7, 0.6), (1.2, 0.8), (0.5, 0.7)], 1):
    ...     stats = EpochStats(epoch=epoch, train_loss=1.0, train_acc=0.5, val_loss=loss,
    ...                        val_acc=acc, lr=1e-3, seconds=1.0)
    ...     improved = state.record(stats, patience=2, selection="val_acc", counts=True)
    >>> state.best_epoch, state.best_acc, state.bad_epochs, state.stopped
    (3, 0.8, 1, False)
    """

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
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> LoopState:
        return cls(
            history=[EpochStats(**row) for row in checkpoint["history"]],
            best_loss=checkpoint["best_val_loss"],
            best_acc=checkpoint.get("best_val_acc", -math.inf), best_epoch=checkpoint["best_epoch"],
            bad_epochs=checkpoint["bad_epochs"], stopped=checkpoint["stopped"],
            earlier_wall_s=checkpoint["wall_time_s"],
        )


class Clock:
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



def train_epoch(
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



def evaluate_loss(
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
