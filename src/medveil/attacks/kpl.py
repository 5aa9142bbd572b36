"""Known-plaintext linear attack (KPL): ridge regression from obfuscated arrays to images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medveil.attacks.base import AttackContext, ReconstructionAttack, Reconstructor, ThreatModel
from medveil.attacks.registry import register_attack

__all__ = ["KnownPlaintextLinearAttack", "leave_one_out_errors", "pooled_features"]


def pooled_features(y: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, n, m)`` to ``(B, p)``: average-pooled to at most ``size x size``, flattened."""
    rows, cols = min(size, y.shape[-2]), min(size, y.shape[-1])
    return F.adaptive_avg_pool2d(y[:, None], (rows, cols)).flatten(1)


def leave_one_out_errors(
    features: torch.Tensor, targets: torch.Tensor, *, alphas: Sequence[float]
) -> dict[float, float]:
    """Leave-one-out mean squared error of ridge regression, per relative strength ``alpha``.

    ``features`` ``F`` (``N x p``) and ``targets`` ``X`` (``N x q``) are centred; the fit has an
    unpenalised intercept, refitted without the left-out pair, and the ridge
    ``a = alpha * trace(F F^T) / p`` of the whole set. From ``F F^T = Q diag(l) Q^T`` the hat
    matrix is ``H = 1 1^T / N + Q diag(l / (l + a)) Q^T`` and the residual of pair ``i`` when it
    is left out is exactly ``((I - H) X)_i / (1 - H_ii)``; its squared norm needs only
    ``Q^T X X^T Q``, so every ``alpha`` costs ``O(N^3)`` after one ``O(N^2 q)`` product. The
    error is per target entry.
    """
    kernel = features @ features.T
    evals, evecs = torch.linalg.eigh(kernel)
    evals = evals.clamp_min(0)
    outer = torch.zeros_like(kernel)
    for j in range(0, targets.shape[1], 8192):  # X X^T a block of pixels at a time
        block = targets[:, j : j + 8192]
        outer += block @ block.T
    outer = evecs.T @ outer @ evecs
    scale = kernel.trace() / features.shape[1]
    errors = {}
    for alpha in alphas:
        ridge = alpha * scale
        shrunk = evecs * (ridge / (evals + ridge))  # Q diag(1 - l / (l + a))
        residual = ((shrunk @ outer) * shrunk).sum(dim=1)
        leverage = 1 / len(features) + (evecs.square() * (evals / (evals + ridge))).sum(dim=1)
        loo = residual / (1 - leverage).clamp_min(1e-12).square()
        errors[alpha] = float(loo.mean()) / targets.shape[1]
    return errors


@register_attack(
    label="Known-plaintext linear attack",
    summary=(
        "Ridge regression from the obfuscated arrays to the images, learned from the known pairs."
    ),
    needs=("public", "pairs"),
    order=70,
)
@dataclass(frozen=True, kw_only=True)
class KnownPlaintextLinearAttack(ReconstructionAttack):
    """``X_hat = mu_X + (f(Y) - mu_f) W`` with ``W`` the ridge solution on the known pairs.

    ``f`` average-pools ``Y`` to at most ``feature_size x feature_size`` and flattens it;
    ``W = (F^T F + a I)^{-1} F^T X`` (or ``F^T (F F^T + a I)^{-1} X`` when there are fewer pairs
    than features) on centred features ``F`` and images ``X``, with
    ``a = alpha * trace(F^T F) / p``. Uses: the known pairs only (A2).

    The attacker picks ``alpha`` among ``alphas`` by the exact leave-one-out error on the pairs
    (:func:`leave_one_out_errors`); ``extra["kpl_loo"]`` records the error per ``alpha`` and
    ``extra["kpl_alpha"]`` the choice.

    Parameters
    ----------
    feature_size
        Side of the pooled feature grid.
    alphas
        Candidate ridge strengths, relative to the mean feature variance.
    """

    name: ClassVar[str] = "kpl"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset({ThreatModel.A2})

    feature_size: int = 32
    alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)

    def __post_init__(self) -> None:
        if not self.alphas or min(self.alphas) <= 0:
            raise ValueError(f"alphas must be positive, got {self.alphas}")

    def fit(
        self, context: AttackContext, observed: torch.Tensor, extra: dict[str, Any]
    ) -> Reconstructor:
        assert context.pair_originals is not None and context.pair_obfuscated is not None
        dt, device = torch.float64, context.device
        pairs = context.pair_obfuscated
        # Pooled chunk by chunk: only the small features are needed, not a float64 copy of every
        # Y (400 MB at 1,000 pairs of 224 px).
        feats = torch.cat(
            [
                pooled_features(pairs[i : i + 256].to(device, dt), self.feature_size)
                for i in range(0, len(pairs), 256)
            ]
        )
        shape = context.pair_originals.shape[1:]
        xc = context.pair_originals.to(device, dt, copy=True).flatten(1)
        x_mean = xc.mean(dim=0)
        xc -= x_mean
        f_mean = feats.mean(dim=0)
        fc = feats - f_mean
        count, dim = fc.shape
        alpha = self.alphas[0]
        if len(self.alphas) > 1:
            errors = leave_one_out_errors(fc, xc, alphas=self.alphas)
            alpha = min(errors, key=errors.__getitem__)
            extra["kpl_loo"] = {f"{a:g}": e for a, e in errors.items()}
            extra["kpl_alpha"] = alpha
        # The ridge system is solved against the features (``dim`` or ``count`` right-hand
        # sides), then applied to the images: the same weights as solving against the images,
        # without a second (pairs or features) x n^2 float64 array besides the weights.
        if dim <= count:
            gram = fc.T @ fc
            ridge = alpha * gram.trace() / dim
            eye = torch.eye(dim, dtype=dt, device=device)
            weights = torch.linalg.solve(gram + ridge * eye, fc.T) @ xc
        else:
            kernel = fc @ fc.T
            ridge = alpha * kernel.trace() / dim
            eye = torch.eye(count, dtype=dt, device=device)
            # (K + aI) is symmetric: F^T (K + aI)^{-1} X = ((K + aI)^{-1} F)^T X.
            weights = torch.linalg.solve(kernel + ridge * eye, fc).T @ xc
        del xc
        weights, f_mean, x_mean = (t.to(context.dtype) for t in (weights, f_mean, x_mean))

        def reconstruct(y: torch.Tensor) -> dict[str, torch.Tensor]:
            out = (pooled_features(y, self.feature_size) - f_mean) @ weights + x_mean
            return {"kpl": out.reshape(len(y), *shape)}

        return reconstruct
