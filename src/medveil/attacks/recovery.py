"""Building blocks shared by the attacks: the public basis ``V_hat``, inverting or estimating
the projection, and the quantizer range."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from medveil.attacks.base import AttackContext, NotApplicableError
from medveil.batched import obfuscate_batches
from medveil.keys import Key, LeftProjection, Preset, RightProjection, SchemeParams
from medveil.stages import truncated_svd

__all__ = [
    "FactorInverse",
    "batched",
    "estimate_clip",
    "factor_inverse",
    "factors",
    "public_basis",
    "self_made_pairs",
]


def batched(
    images: torch.Tensor, context: AttackContext, batch_size: int = 256
) -> Iterator[torch.Tensor]:
    """Yield ``images`` in batches on the context's device and dtype."""
    for i in range(0, len(images), batch_size):
        yield context.tensor(images[i : i + batch_size])


def factors(images: torch.Tensor, context: AttackContext) -> torch.Tensor:
    """``Z = U_k S_k`` of plaintext images, computed as the scheme does (the attacker knows it)."""
    p = context.params
    return torch.cat(
        [truncated_svd(b, p.rank, solver=p.solver).factor for b in batched(images, context)]
    )


def _polar(m: torch.Tensor) -> torch.Tensor:
    """Closest matrix with orthonormal columns (Frobenius norm): ``U W^T`` of ``m = U S W^T``."""
    u, _, wh = torch.linalg.svd(m, full_matrices=False)
    return u @ wh


def public_basis(context: AttackContext, *, passes: int = 2) -> torch.Tensor:
    """Estimate ``V_k`` (``n x k``) from the public images.

    ``V_hat = qr(mean_i V_i D_i)`` where ``D_i = diag(sign(diag(V_i^T V_ref)))`` aligns each
    public image's right singular vectors with a reference (the first image's basis, then the
    previous estimate). Gram-Schmidt (QR with a positive diagonal) re-orthonormalises in column
    order, so the well-estimated leading vectors are kept as they are and the noisy trailing
    ones adapt to them (a symmetric re-orthonormalisation would let the trailing noise leak into
    the leading vectors).
    """
    assert context.public is not None
    p = context.params
    bases = torch.cat(
        [truncated_svd(b, p.rank, solver=p.solver).basis for b in batched(context.public, context)]
    )
    ref = bases[0]
    for _ in range(passes):
        signs = torch.sign((bases * ref).sum(dim=-2, keepdim=True))
        signs = torch.where(signs == 0, torch.ones_like(signs), signs)
        q, r = torch.linalg.qr((bases * signs).mean(dim=0))
        diag = torch.sign(torch.diagonal(r))
        ref = q * torch.where(diag == 0, torch.ones_like(diag), diag)
    return ref


def estimate_clip(context: AttackContext) -> float:
    """The quantizer range ``c``: from the leaked key, or re-calibrated on the public images.

    The calibration rule is public (the ``clip_percentile``-th percentile of ``|Z|``), so an
    attacker without the key reproduces it on images of the same modality.
    """
    key = context.key
    if key is not None and key.params.needs_calibration and key.calibration is not None:
        return key.calibration.clip
    assert context.public is not None
    z = factors(context.public, context).abs().flatten().double().cpu().numpy()
    return float(np.percentile(z, context.params.clip_percentile))


@dataclass(frozen=True)
class FactorInverse:
    """Affine map from an obfuscated array back to the (noisy, quantized) factor.

    ``Z_hat = s L (Y - C) R + D`` with ``L`` (``n x n``) and ``R`` (``m x k``); a ``None`` side is
    the identity, and the scale ``s``, offset ``C`` and bias ``D`` (scalars or matrices) undo
    the output standardisation.
    """

    left: torch.Tensor | None
    right: torch.Tensor | None
    offset: torch.Tensor | float = 0.0
    scale: float = 1.0
    bias: torch.Tensor | float = 0.0

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        z = y - self.offset
        if self.left is not None:
            z = self.left @ z
        if self.right is not None:
            z = z @ self.right
        return self.scale * z + self.bias

    @classmethod
    def identity(cls) -> FactorInverse:
        return cls(None, None)

    @classmethod
    def from_key(cls, key: Key, *, device: torch.device, dtype: torch.dtype) -> FactorInverse:
        """Exact inverse of the projection and standardisation given the key.

        ``Y = (R_L Z R_R - mu) / sigma``  =>  ``Z = sigma R_L^T (Y + mu / sigma) R_R^+``
        (``R_L`` is orthogonal; ``R_R`` is ``k x m`` with ``m >= k``, so ``R_R R_R^+ = I``).
        """
        if key.params.preset is Preset.SVD:
            return cls.identity()
        cal = key.calibration
        if cal is None:
            raise NotApplicableError("the leaked key is not calibrated")
        left, right = key.left_matrix(), key.right_matrix()

        def tensor(m: np.ndarray | None) -> torch.Tensor | None:
            return None if m is None else torch.as_tensor(m, dtype=dtype, device=device)

        return cls(
            tensor(None if left is None else left.T),
            tensor(None if right is None else np.linalg.pinv(right)),
            offset=-cal.mean / cal.std,
            scale=cal.std,
        )

    @classmethod
    def from_pairs(
        cls,
        context: AttackContext,
        *,
        iterations: int = 30,
        ridge: float = 1e-6,
        chunk: int = 64,
        originals: torch.Tensor | None = None,
        obfuscated: torch.Tensor | None = None,
    ) -> FactorInverse:
        """Least-squares estimate of the inverse projection from known pairs (A2).

        The attacker computes ``Z_j`` of each known original and fits the inverse map directly,
        ``Z_j ~ L (Y_j - mean Y) R + mean Z``, by alternating least squares on centred data:
        ``R = (sum U_j^T U_j + a I)^{-1} sum U_j^T Z_j`` with ``U_j = L Y_j`` (ridge ``a``
        relative to the mean eigenvalue, as ``Y``'s rows span only ``k`` of ``m`` dimensions), and
        ``L = polar(sum Z_j V_j^T)`` with ``V_j = Y_j R`` (orthogonal Procrustes: ``R_L`` is known
        to be orthogonal); without a right projection ``R = s I`` with a least-squares scalar.
        Regressing ``Z`` on ``Y`` (not ``Y`` on ``Z``) keeps the noise of the trailing, tiny
        columns of ``Z`` from blowing up the estimate: it is the best linear predictor of ``Z``.
        ``originals`` and ``obfuscated`` replace the context's pairs (a key holder's self-made
        pairs, see :func:`self_made_pairs`).

        Every ``L`` is orthogonal (the identity, then a polar factor), so
        ``sum U_j^T U_j = sum Y_j^T Y_j`` is computed once. The sums run over ``chunk`` pairs at
        a time in float64, so memory stays at a few ``(chunk, n, m)`` arrays whatever the number
        of pairs (1,000 pairs at 224 px are 400 MB per float64 copy of ``Y``).
        """
        p = context.params
        if p.preset is Preset.SVD:
            return cls.identity()
        originals = context.pair_originals if originals is None else originals
        pairs = context.pair_obfuscated if obfuscated is None else obfuscated
        assert originals is not None and pairs is not None
        dt, device = torch.float64, context.device
        z = factors(originals, context).to(dt)
        z_mean = z.mean(dim=0)
        zc = z - z_mean
        y_sum = torch.zeros(pairs.shape[1:], dtype=dt, device=device)
        for i in range(0, len(pairs), chunk):
            y_sum += pairs[i : i + chunk].to(device, dt).sum(dim=0)
        y_mean = y_sum / len(pairs)

        def centred() -> Iterator[tuple[slice, torch.Tensor]]:
            for i in range(0, len(pairs), chunk):
                yield slice(i, i + chunk), pairs[i : i + chunk].to(device, dt) - y_mean

        use_left = p.left is LeftProjection.ORTHOGONAL
        use_right = p.right is RightProjection.GAUSSIAN
        n, m, k = p.size, pairs.shape[-1], zc.shape[-1]
        eye = torch.eye(m, dtype=dt, device=device)
        left = torch.eye(n, dtype=dt, device=device)
        right = eye
        gram = torch.zeros(m, m, dtype=dt, device=device)
        if use_right:
            for _, yc in centred():
                gram += _stacked_cross(yc, yc)
        regularised = gram + ridge * gram.trace() / m * eye
        for _ in range(iterations if use_left and use_right else 1):
            if use_right:
                cross = torch.zeros(m, k, dtype=dt, device=device)
                for rows, yc in centred():
                    cross += _stacked_cross(yc, left.mT @ zc[rows])
                right = torch.linalg.solve(regularised, cross)
            if use_left:
                moment = torch.zeros(n, n, dtype=dt, device=device)
                for rows, yc in centred():
                    moment += _stacked_cross(zc[rows].mT, (yc @ right).mT)
                left = _polar(moment)
        if not use_right:
            num = den = torch.zeros((), dtype=dt, device=device)
            for rows, yc in centred():
                fitted = left @ yc
                num = num + (fitted * zc[rows]).sum()
                den = den + (fitted * fitted).sum()
            right = eye * (num / den)
        return cls(
            left.to(context.dtype) if use_left else None,
            right.to(context.dtype),
            offset=y_mean.to(context.dtype),
            bias=z_mean.to(context.dtype),
        )


def _stacked_cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_j a_j^T b_j`` of ``(B, r, p)`` and ``(B, r, q)`` batches as one ``(p, q)`` product.

    Stacking the batch along the rows avoids the ``(B, p, q)`` temporary of a batched product
    (``(B, m, m)`` float64 per pair chunk for the Gram).
    """
    return a.reshape(-1, a.shape[-1]).mT @ b.reshape(-1, b.shape[-1])


def self_made_pairs(context: AttackContext) -> FactorInverse:
    """A3: the key holder obfuscates the public images with fresh noise and fits on those pairs.

    With the key, the attacker can make as many pairs as there are public images. The pair fit
    is the best linear predictor of the factor, so it shrinks the noisy columns that the exact
    inverse (:meth:`FactorInverse.from_key`) passes through: with strong noise or coarse
    quantization it is the better reconstruction.
    """
    from medveil.obfuscator import Obfuscator

    assert context.key is not None and context.public is not None
    obfuscator = Obfuscator(context.key)
    made = obfuscate_batches(obfuscator, context.public, device=context.device)
    return FactorInverse.from_pairs(context, originals=context.public, obfuscated=made)


def factor_inverse(context: AttackContext) -> FactorInverse:
    """The best inverse the threat model allows: the key (A3), pairs (A2), nothing needed (svd)."""
    p: SchemeParams = context.params
    if p.preset is Preset.SVD:
        return FactorInverse.identity()
    if context.key is not None:
        return FactorInverse.from_key(context.key, device=context.device, dtype=context.dtype)
    if context.pair_originals is not None:
        return FactorInverse.from_pairs(context)
    raise NotApplicableError(
        "inverting the multistage projection needs the key (A3) or known pairs (A2)"
    )
