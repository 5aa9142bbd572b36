"""The optimiser of a training run and its per-step learning-rate schedule.

Under the one-cycle schedule the learning rate rises for the first :data:`WARMUP_FRACTION` of
the steps; the epochs up to that peak never count against early stopping's patience
(:func:`warmup_epochs`, :mod:`medveil.training.epochs`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medveil.training.config import TrainConfig
from medveil.training.models import StemmedClassifier

__all__ = ["WARMUP_FRACTION", "make_optimizer", "make_scheduler", "warmup_epochs"]

WARMUP_FRACTION = 0.3  # of the one-cycle schedule's steps, up to the learning-rate peak


def warmup_epochs(config: TrainConfig) -> int:
    """Epochs that end at or before the learning-rate peak (they never count against patience).

    Examples
    --------
    >>> warmup_epochs(TrainConfig(epochs=10)), warmup_epochs(TrainConfig(epochs=10, schedule="cosine"))
    (3, 0)
    """
    if config.schedule != "onecycle":
        return 0
    return math.ceil(WARMUP_FRACTION * config.epochs)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW at the configured peak learning rate and decoupled weight decay.

    With ``config.stem_lr_scale`` other than 1, a model's learned input stem
    (:class:`~medveil.training.models.StemmedClassifier`'s ``stem``) trains in
    a parameter group of its own at that multiple of the rate, after the backbone's group. At 1
    there is one group, as in runs saved before the option existed, so they still resume.

    Examples
    --------
    >>> from torch import nn
    >>> model = StemmedClassifier(stem=nn.Linear(4, 4), backbone=nn.Linear(4, 2))
    >>> optimizer = make_optimizer(model, TrainConfig(lr=1e-3, stem_lr_scale=10))
    >>> [group["lr"] for group in optimizer.param_groups]
    [0.001, 0.01]
    """
    stem = model.stem if isinstance(model, StemmedClassifier) else None
    stem_params = [p for p in stem.parameters() if p.requires_grad] if stem is not None else []
    if not stem_params or config.stem_lr_scale == 1:
        return torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    held = {id(p) for p in stem_params}
    return torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if id(p) not in held]},
            {"params": stem_params, "lr": config.lr * config.stem_lr_scale},
        ],
        lr=config.lr, weight_decay=config.weight_decay,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, *, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The configured schedule over ``total_steps`` optimisation steps (stepped once per batch)."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total_steps, pct_start=WARMUP_FRACTION
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
