"""Known-plaintext linear attack (KPL): ridge regression from obfuscated arrays to images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medveil.attacks.base import AttackContext, ReconstructionAttack, Reconstructor, ThreatModel


def pooled_features(y: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, n, m)`` to ``(B, p)``: average-pooled to at most ``size x size``, flattened."""
    rows, cols = min(size, y.shape[-2]), min(size, y.shape[-1])
    return F.adaptive_avg_pool2d(y[:, None], (rows, cols)).flatten(1)


@dataclass(frozen=True, kw_only=True)
class KnownPlaintextLinearAttack(ReconstructionAttack):
    """``X_hat = mu_X + (f(Y) - mu_f) W`` with ``W`` the ridge solution on the known pairs.

    ``f`` average-pools ``Y`` to at most ``feature_size x feature_size`` and flattens it;
    ``W = (F^T F + a I)^{-1} F^T X`` (or ``F^T (F F^T + a I)^{-1} X`` when there are fewer pairs
    than features) on centred features ``F`` and images ``X``, with
    ``a = alpha * trace(F^T F) / p``. Uses: the known pairs only (A2).

    Parameters
    ----------
    feature_size
        Side of the pooled feature grid.
    alpha
        Ridge strength relative to the mean feature variance.
    """

    name: ClassVar[str] = "kpl"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset({ThreatModel.A2})

    feature_size: int = 32
    alpha: float = 1e-3

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
        # The ridge system is solved against the features (``dim`` or ``count`` right-hand
        # sides), then applied to the images: the same weights as solving against the images,
        # without a second (pairs or features) x n^2 float64 array besides the weights.
        if dim <= count:
            gram = fc.T @ fc
            ridge = self.alpha * gram.trace() / dim
            eye = torch.eye(dim, dtype=dt, device=device)
            weights = torch.linalg.solve(gram + ridge * eye, fc.T) @ xc
        else:
            kernel = fc @ fc.T
            ridge = self.alpha * kernel.trace() / dim
            eye = torch.eye(count, dtype=dt, device=device)
            # (K + aI) is symmetric: F^T (K + aI)^{-1} X = ((K + aI)^{-1} F)^T X.
            weights = torch.linalg.solve(kernel + ridge * eye, fc).T @ xc
        del xc
        weights, f_mean, x_mean = (t.to(context.dtype) for t in (weights, f_mean, x_mean))

        def reconstruct(y: torch.Tensor) -> dict[str, torch.Tensor]:
            out = (pooled_features(y, self.feature_size) - f_mean) @ weights + x_mean
            return {"kpl": out.reshape(len(y), *shape)}

        return reconstruct
