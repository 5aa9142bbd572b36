"""The reconstruction and re-identification attack suite (``METHOD.md``, "Attacks").

Each attack is a frozen keyword-only dataclass of its parameters with a
``run(context, victims) -> AttackResult``, registered by its module in
:mod:`medveil.attacks.registry` (:func:`list_attacks`, :func:`create_attack`);
:func:`medveil.privacy.run_privacy` runs every applicable one and
:class:`PrivacySummary` shows their scores.
"""

from medveil.attacks.base import (
    Attack,
    AttackContext,
    AttackResult,
    DisjointnessError,
    MatchingAttack,
    NotApplicableError,
    ReconstructionAttack,
    ThreatModel,
    Victims,
    check_disjoint,
    content_ids,
)
from medveil.attacks.baseline import MeanImageBaseline
from medveil.attacks.gram import CovarianceAttack, GramAttack
from medveil.attacks.kpd import KnownPlaintextDecoderAttack
from medveil.attacks.kpl import KnownPlaintextLinearAttack
from medveil.attacks.lba import LeadingBitAttack
from medveil.attacks.mda import MinimumDifferenceAttack, MinimumDifferencePoolAttack
from medveil.attacks.nearest import NearestPublicAttack
from medveil.attacks.public_basis import PublicBasisAttack
from medveil.attacks.registry import (
    AttackSpec,
    Knowledge,
    attack_spec,
    attack_specs,
    create_attack,
    list_attacks,
    register_attack,
)
from medveil.attacks.reid import ReidentificationAttack
from medveil.attacks.summary import PrivacySummary

__all__ = [
    "Attack",
    "AttackContext",
    "AttackResult",
    "AttackSpec",
    "CovarianceAttack",
    "DisjointnessError",
    "GramAttack",
    "Knowledge",
    "KnownPlaintextDecoderAttack",
    "KnownPlaintextLinearAttack",
    "LeadingBitAttack",
    "MatchingAttack",
    "MeanImageBaseline",
    "MinimumDifferenceAttack",
    "MinimumDifferencePoolAttack",
    "NearestPublicAttack",
    "NotApplicableError",
    "PrivacySummary",
    "PublicBasisAttack",
    "ReconstructionAttack",
    "ReidentificationAttack",
    "ThreatModel",
    "Victims",
    "attack_spec",
    "attack_specs",
    "check_disjoint",
    "content_ids",
    "create_attack",
    "list_attacks",
    "register_attack",
]
