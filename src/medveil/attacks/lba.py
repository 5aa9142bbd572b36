"""Leading Bit Attack (LBA): keep only the most significant bits of the re-quantized factor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from medveil.attacks.base import AttackContext, ReconstructionAttack, Reconstructor, ThreatModel
from medveil.attacks.recovery import (
    estimate_clip,
    factor_inverse,
    public_basis,
    self_made_pairs,
)
from medveil.attacks.registry import register_attack
from medveil.keys import Preset
from medveil.stages import dequantize, quantize

__all__ = ["LeadingBitAttack", "leading_bits"]


def leading_bits(codes: torch.Tensor, *, bits: int, keep: int) -> torch.Tensor:
    """Keep the ``keep`` most significant of ``bits`` bits of each code.

    The dropped bits are replaced by the middle of their range,
    ``((q >> d) << d) + 2^(d-1)`` with ``d = bits - keep``, the unbiased choice under a uniform
    prior (plain truncation would shift every value down by half a coarse step).
    """
    drop = bits - keep
    if drop == 0:
        return codes
    coarse = (codes >> drop) << drop
    return (coarse + (1 << (drop - 1))).clamp(max=(1 << bits) - 1)


@register_attack(
    label="Leading Bit Attack",
    summary=(
        "Inverts the projection (with the key, or by least squares on the pairs), keeps the "
        "most significant bits of the re-quantized factor and re-synthesises with the public "
        "basis."
    ),
    needs=("public",),
    order=40,
)
@dataclass(frozen=True, kw_only=True)
class LeadingBitAttack(ReconstructionAttack):
    """For ``t = 1 ... b``: ``X_hat_t = deq(MSB_t(Q_b(Z_hat))) V_hat^T``; reports every ``t``.

    ``Z_hat`` is recovered as in :class:`~medveil.attacks.public_basis.PublicBasisAttack`
    (key under A3, least-squares projection from the pairs under A2; under A3 on ``multistage``
    also from a fit on self-made pairs, variants ``pairs t=...``), then re-quantized to
    ``b`` bits over ``[-c, c]`` with ``c`` from the leaked key or re-calibrated on the public
    images (A2). Uses: public images, and the key (A3) or pairs (A2). The result's metrics are
    those of the best ``t`` (``extra["best_variant"]``); every ``t`` is in ``extra["variants"]``.

    Parameters
    ----------
    bits
        ``b``; defaults to the scheme's ``bits`` (8 when the scheme does not quantize).
    basis_passes
        Sign-alignment passes of the public-basis estimate.
    """

    name: ClassVar[str] = "lba"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset({ThreatModel.A2, ThreatModel.A3})

    bits: int | None = None
    basis_passes: int = 2

    def fit(
        self, context: AttackContext, observed: torch.Tensor, extra: dict[str, Any]
    ) -> Reconstructor:
        bits = self.bits or context.params.bits or 8
        clip = estimate_clip(context)
        basis = public_basis(context, passes=self.basis_passes)
        inverses = {"": factor_inverse(context)}
        if context.key is not None and context.params.preset is Preset.MULTISTAGE:
            inverses["pairs "] = self_made_pairs(context)

        def reconstruct(y: torch.Tensor) -> dict[str, torch.Tensor]:
            out = {}
            for prefix, invert in inverses.items():
                codes = quantize(invert(y), bits=bits, clip=clip)
                for t in range(1, bits + 1):
                    kept = leading_bits(codes, bits=bits, keep=t)
                    z = dequantize(kept, bits=bits, clip=clip, dtype=y.dtype)
                    out[f"{prefix}t={t}"] = z @ basis.mT
            return out

        return reconstruct
