"""Known-plaintext decoder attack (KPD): a learned convolutional decoder trained on the pairs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medveil.attacks.base import AttackContext, ReconstructionAttack, Reconstructor, ThreatModel
from medveil.attacks.registry import register_attack
from medveil.metrics import ssim

__all__ = ["BilinearUNet", "KnownPlaintextDecoderAttack"]

#: ``progress(step, max_steps, loss)`` is called every ``progress_every`` steps and at the end.
Progress = Callable[[int, int, float], None]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GELU(),
    )


class BilinearUNet(nn.Module):
    """A learned bilinear lift followed by a two-level U-Net.

    The projection mixes all rows and columns, so a purely local decoder cannot invert it. The
    lift computes ``C`` channels ``H_c = A_c Y B_c + b_c`` (``A_c``: ``n x n``, ``B_c``: ``m x n``),
    which can express the linear inverse ``Z_hat V^T = s R_L^T (Y - C) R_R^+ V^T`` exactly for one
    ``V``; the U-Net (skip connections, GELU) then corrects the image-dependent remainder.
    A linear read-out of the lift is added to the U-Net's output (residual path).
    """

    def __init__(self, n: int, m: int, *, channels: int, width: int) -> None:
        super().__init__()
        self.left = nn.Parameter(torch.randn(channels, n, n) / math.sqrt(n))
        self.right = nn.Parameter(torch.randn(channels, m, n) / math.sqrt(m))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1))
        self.enc1 = _block(channels, width)
        self.enc2 = _block(width, 2 * width)
        self.dec = _block(3 * width, width)
        self.head = nn.Conv2d(width, 1, 1)
        self.linear = nn.Conv2d(channels, 1, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        lift = self.left @ y[:, None] @ self.right + self.bias
        e1 = self.enc1(lift)
        e2 = self.enc2(F.avg_pool2d(e1, 2, ceil_mode=True))
        up = F.interpolate(e2, size=e1.shape[-2:], mode="bilinear", align_corners=False)
        return (self.head(self.dec(torch.cat([e1, up], dim=1))) + self.linear(lift))[:, 0]


@register_attack(
    label="Known-plaintext decoder",
    summary=("A convolutional decoder trained on the known pairs."),
    needs=("public", "pairs"),
    order=80,
)
@dataclass(frozen=True, kw_only=True)
class KnownPlaintextDecoderAttack(ReconstructionAttack):
    """Train :class:`BilinearUNet` on the known pairs, minimising ``MSE + l1_weight * L1``.

    Training stops after ``max_steps`` Adam steps or ``max_seconds``, whichever comes first
    (raise both for the strongest attack). Inputs are scaled by the pairs' standard deviation.
    Uses: the known pairs only (A2); scored on the held-out victims.
    ``extra`` records ``steps``, ``train_seconds``, ``final_loss`` and a ``history`` of
    ``[step, loss]``.

    Parameters
    ----------
    channels, width
        Lift channels and U-Net base width.
    max_steps, max_seconds
        Training budget.
    batch_size, lr, l1_weight, seed
        Optimisation settings; ``seed`` fixes initialisation and batch order.
    progress, progress_every
        Optional callback ``progress(step, max_steps, loss)`` and its period in steps.
    holdout, eval_every
        With ``holdout > 0``, the last ``holdout`` pairs are kept out of training and the
        decoder's mean SSIM on them is recorded every ``eval_every`` steps and at the end, in
        ``extra["curve"]`` as ``[step, seconds, ssim]``: the training curve that tells whether
        the budget let the decoder converge. The victims are never used for it.
    """

    name: ClassVar[str] = "kpd"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset({ThreatModel.A2})

    channels: int = 8
    width: int = 16
    max_steps: int = 2000
    max_seconds: float = 600.0
    batch_size: int = 32
    lr: float = 2e-3
    l1_weight: float = 1.0
    seed: int = 0
    progress: Progress | None = field(default=None, repr=False, compare=False)
    progress_every: int = 50
    holdout: int = 0
    eval_every: int = 500

    def __post_init__(self) -> None:
        if self.holdout < 0 or self.eval_every < 1:
            raise ValueError("holdout must be >= 0 and eval_every >= 1")

    def fit(
        self, context: AttackContext, observed: torch.Tensor, extra: dict[str, Any]
    ) -> Reconstructor:
        assert context.pair_originals is not None and context.pair_obfuscated is not None
        y_pairs = context.tensor(context.pair_obfuscated)
        x_pairs = context.tensor(context.pair_originals)
        if self.holdout:
            if self.holdout >= len(y_pairs):
                raise ValueError(
                    f"holdout={self.holdout} leaves no pair to train on ({len(y_pairs)} pairs)"
                )
            y_held, x_held = y_pairs[-self.holdout :], x_pairs[-self.holdout :]
            y_pairs, x_pairs = y_pairs[: -self.holdout], x_pairs[: -self.holdout]
        scale = float(y_pairs.std().clamp_min(1e-12))
        torch.manual_seed(self.seed)
        n, m = y_pairs.shape[-2:]
        model = BilinearUNet(n, m, channels=self.channels, width=self.width).to(
            context.device, context.dtype
        )
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        order = torch.Generator().manual_seed(self.seed)
        history: list[list[float]] = []
        curve: list[list[float]] = []

        def score_holdout() -> None:
            model.eval()
            with torch.no_grad():
                pred = torch.cat([
                    model(y_held[i : i + self.batch_size] / scale).clamp(0, 1)
                    for i in range(0, len(y_held), self.batch_size)
                ])
            curve.append(
                [step, time.perf_counter() - start, float(ssim(x_held, pred).mean())]
            )
            model.train()

        start = time.perf_counter()
        step, loss_value = 0, float("nan")
        model.train()
        with torch.enable_grad():
            while step < self.max_steps and time.perf_counter() - start < self.max_seconds:
                idx = torch.randint(
                    len(y_pairs), (min(self.batch_size, len(y_pairs)),), generator=order
                )
                idx = idx.to(context.device)
                pred = model(y_pairs[idx] / scale)
                err = pred - x_pairs[idx]
                loss = (err**2).mean() + self.l1_weight * err.abs().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                loss_value = loss.item()
                if step % self.progress_every == 0 or step == self.max_steps:
                    history.append([step, loss_value])
                    if self.progress is not None:
                        self.progress(step, self.max_steps, loss_value)
                if self.holdout and step % self.eval_every == 0:
                    score_holdout()
        if self.holdout and (not curve or curve[-1][0] != step):
            score_holdout()
        model.eval()
        extra.update(
            steps=step,
            train_seconds=time.perf_counter() - start,
            final_loss=loss_value,
            history=history,
            **({"curve": curve} if self.holdout else {}),
        )
        return lambda y: {"kpd": model(y / scale)}
