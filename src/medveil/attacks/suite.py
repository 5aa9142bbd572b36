"""Run every applicable attack under every requested threat model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from medveil.attacks.base import (
    Attack,
    AttackContext,
    AttackResult,
    ReconstructionAttack,
    ThreatModel,
    Victims,
)
from medveil.attacks.baseline import MeanImageBaseline
from medveil.attacks.gram import CovarianceAttack, GramAttack
from medveil.attacks.kpd import KnownPlaintextDecoderAttack
from medveil.attacks.kpl import KnownPlaintextLinearAttack
from medveil.attacks.lba import LeadingBitAttack
from medveil.attacks.mda import MinimumDifferenceAttack, MinimumDifferencePoolAttack
from medveil.attacks.nearest import NearestPublicAttack
from medveil.attacks.public_basis import PublicBasisAttack
from medveil.attacks.reid import ReidentificationAttack
from medveil.keys import Key
from medveil.obfuscator import Obfuscator

__all__ = ["SuiteResult", "default_attacks", "run_suite"]


def default_attacks() -> list[Attack]:
    """One instance of every attack with its default parameters."""
    return [
        MeanImageBaseline(),
        NearestPublicAttack(),
        PublicBasisAttack(),
        LeadingBitAttack(),
        MinimumDifferenceAttack(),
        MinimumDifferencePoolAttack(),
        KnownPlaintextLinearAttack(),
        KnownPlaintextDecoderAttack(),
        ReidentificationAttack(),
        GramAttack(),
        CovarianceAttack(),
    ]


@dataclass
class SuiteResult:
    """Results of :func:`run_suite` and the (attack, threat) pairs skipped with their reason."""

    results: list[AttackResult]
    skipped: list[tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> pd.DataFrame:
        """One row per result (:meth:`AttackResult.summary`)."""
        return pd.DataFrame([r.summary() for r in self.results])


def run_suite(
    key: Key,
    *,
    public: torch.Tensor,
    victims: torch.Tensor,
    pairs: torch.Tensor | None = None,
    threats: Sequence[ThreatModel | str] = (ThreatModel.A1, ThreatModel.A2, ThreatModel.A3),
    attacks: Sequence[Attack] | None = None,
    public_ids: Sequence[str] | None = None,
    victim_ids: Sequence[str] | None = None,
    pair_ids: Sequence[str] | None = None,
    noise_seed: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> SuiteResult:
    """Obfuscate ``victims`` (and ``pairs``) with ``key`` and run every applicable attack.

    Parameters
    ----------
    key
        The victims' (calibrated) key; it is handed to the attacker only under A3.
    public, victims, pairs
        Disjoint ``(B, n, n)`` image sets in [0, 1]; ``pairs`` are needed for A2.
    threats, attacks
        Threat models to evaluate and attacks to try (default: :func:`default_attacks`).
    public_ids, victim_ids, pair_ids
        Identifiers for the disjointness check (content hashes when omitted).
    noise_seed
        Pins the obfuscation noise (reproducibility studies only).
    device, batch_size
        Where and in which batches the attacks compute.

    An attack that does not apply (threat model or scheme) is recorded in ``skipped``;
    overlapping image sets raise :class:`~medveil.attacks.base.DisjointnessError`.
    """
    obfuscator = Obfuscator(key, noise_seed=noise_seed)
    attacked = Victims.obfuscate(victims, obfuscator, ids=victim_ids)
    known = None if pairs is None else Victims.obfuscate(pairs, obfuscator, ids=pair_ids)
    suite = SuiteResult(results=[])
    for threat in map(ThreatModel, threats):
        if threat is ThreatModel.A2 and known is None:
            suite.skipped.append(("*", str(threat), "no known pairs given"))
            continue
        context = AttackContext(
            threat=threat,
            params=key.params,
            public=None if threat is ThreatModel.A0 else public,
            public_ids=None if public_ids is None else tuple(public_ids),
            pair_originals=known.originals if threat is ThreatModel.A2 and known else None,
            pair_obfuscated=known.obfuscated if threat is ThreatModel.A2 and known else None,
            pair_ids=known.ids if threat is ThreatModel.A2 and known else None,
            key=key if threat is ThreatModel.A3 else None,
            device=device,
        )
        context.check_victims(attacked)
        for attack in attacks if attacks is not None else default_attacks():
            reason = attack.applicable(context)
            if reason is not None:
                suite.skipped.append((attack.name, str(threat), reason))
                continue
            if isinstance(attack, ReconstructionAttack):
                suite.results.append(attack.run(context, attacked, batch_size=batch_size))
            else:
                suite.results.append(attack.run(context, attacked))
    return suite
