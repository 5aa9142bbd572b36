"""Nearest public image (NP): reconstruct a victim as the public images that look most like it
through the obfuscation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from medveil.attacks.base import (
    AttackContext,
    NotApplicableError,
    ReconstructionAttack,
    Reconstructor,
    ThreatModel,
)
from medveil.attacks.recovery import factor_inverse, factors
from medveil.attacks.registry import register_attack
from medveil.attacks.reid import observed_spectra, output_offset, plain_spectra, standardise
from medveil.keys import Preset

__all__ = ["NearestPublicAttack"]


@register_attack(
    label="Nearest public image",
    summary=(
        "Returns the public images that look most like the victim through the obfuscation (by "
        "singular-value spectrum, or by the recovered factor where the key or pairs allow): "
        "what picking look-alikes alone achieves."
    ),
    needs=("public",),
    order=20,
)
@dataclass(frozen=True, kw_only=True)
class NearestPublicAttack(ReconstructionAttack):
    """``X_hat = (1/m) sum_{j in N_m(Y)} P_j``: the mean of the ``m`` public images ``P_j``
    nearest to the victim by a feature that survives the obfuscation.

    Features (one variant per feature and ``m``, named ``<feature>-nn<m>``):

    - ``spectrum``, keyless (A1): the log singular-value spectrum, as in
      :class:`~medveil.attacks.reid.ReidentificationAttack` (for ``multistage`` standardised
      within the victims, with statistics from every observed victim, and within the public set).
    - ``factor``, wherever the factor can be recovered (``svd`` from A1 on; ``multistage`` with
      the key (A3) or a projection fitted on known pairs (A2)): the Euclidean distance between
      the recovered ``Z_hat`` and the public images' ``Z = U_k S_k`` under the same sign rule.

    This is the honest yardstick for a reconstruction attack: the public mean
    (:class:`~medveil.attacks.baseline.MeanImageBaseline`) ignores the victim, this uses only
    what the obfuscation lets through to pick look-alikes (orientation, contrast, head size), and
    it reconstructs nothing the public set does not hold. An attack that does not beat it has
    learned no more about the victim than which public images resemble it.
    Uses: the public images, and the key or pairs for the ``factor`` feature on ``multistage``.

    Parameters
    ----------
    neighbours
        The values of ``m``; each is capped at the number of public images.
    floor
        Relative floor of the singular values (see :func:`~medveil.attacks.reid.plain_spectra`).
    """

    name: ClassVar[str] = "nearest_public"
    threats: ClassVar[frozenset[ThreatModel]] = frozenset(
        {ThreatModel.A1, ThreatModel.A2, ThreatModel.A3}
    )

    neighbours: tuple[int, ...] = (1, 5)
    floor: float = 1e-3

    def __post_init__(self) -> None:
        if not self.neighbours or min(self.neighbours) < 1:
            raise ValueError(f"neighbours must be positive integers, got {self.neighbours}")

    def fit(
        self, context: AttackContext, observed: torch.Tensor, extra: dict[str, Any]
    ) -> Reconstructor:
        assert context.public is not None
        p = context.params
        public = context.tensor(context.public)
        # The offset and the victims' feature statistics are estimated once on every observed
        # victim, so a reconstruction does not depend on how the victims are batched.
        offset = output_offset(p, observed)
        plain = plain_spectra(context, context.public, floor=self.floor)

        def spectrum(y: torch.Tensor) -> torch.Tensor:
            return observed_spectra(p, y, floor=self.floor, offset=offset)

        features: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]] = {}
        if p.preset is Preset.MULTISTAGE:
            seen = spectrum(observed)
            centre, spread = seen.mean(dim=0), seen.std(dim=0).clamp_min(1e-12)
            features["spectrum"] = (lambda y: (spectrum(y) - centre) / spread, standardise(plain))
        else:
            features["spectrum"] = (spectrum, plain)
        try:
            invert = factor_inverse(context)
        except NotApplicableError:
            pass
        else:
            public_factors = factors(context.public, context).flatten(1)
            features["factor"] = (lambda y: invert(y).flatten(1), public_factors)

        def reconstruct(y: torch.Tensor) -> dict[str, torch.Tensor]:
            out = {}
            for name, (feature, reference) in features.items():
                distance = torch.cdist(feature(y).double(), reference.double())
                for m in self.neighbours:
                    nearest = distance.topk(min(m, len(public)), largest=False).indices
                    out[f"{name}-nn{m}"] = public[nearest].mean(dim=1)
            return out

        return reconstruct
