"""The reconstruction and re-identification attack suite (``METHOD.md``, "Attacks").

Each attack is a frozen keyword-only dataclass of its parameters with a
``run(context, victims) -> AttackResult``; :func:`run_suite` runs every applicable one.
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
from medveil.attacks.reid import ReidentificationAttack
from medveil.attacks.suite import SuiteResult, default_attacks, run_suite

__all__ = [
    "Attack",
    "AttackContext",
    "AttackResult",
    "CovarianceAttack",
    "DisjointnessError",
    "GramAttack",
    "KnownPlaintextDecoderAttack",
    "KnownPlaintextLinearAttack",
    "LeadingBitAttack",
    "MatchingAttack",
    "MeanImageBaseline",
    "MinimumDifferenceAttack",
    "MinimumDifferencePoolAttack",
    "NearestPublicAttack",
    "NotApplicableError",
    "PublicBasisAttack",
    "ReconstructionAttack",
    "ReidentificationAttack",
    "SuiteResult",
    "ThreatModel",
    "Victims",
    "check_disjoint",
    "content_ids",
    "default_attacks",
    "run_suite",
]
