"""The learned decoder's training curve on held-out pairs (``KnownPlaintextDecoderAttack.holdout``)."""

from __future__ import annotations

import pytest
import torch

from medveil.attacks import AttackContext, KnownPlaintextDecoderAttack, ThreatModel, Victims
from medveil.calibration import calibrate
from medveil.keys import Key, SchemeParams
from medveil.obfuscator import Obfuscator

N = 16


def _plaid(count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = torch.rand(count, N, 1, generator=g)
    cols = torch.rand(count, 1, N, generator=g)
    return (0.5 * rows + 0.5 * cols).clamp(0, 1)


def _context(pairs: int) -> tuple[AttackContext, Victims]:
    scheme = SchemeParams(preset="multistage", size=N, rank=4, bits=None, noise=0.0)
    public = _plaid(40, 1)
    key = calibrate(Key(secret=bytes(range(32)), params=scheme), public)
    obf = Obfuscator(key, noise_seed=0)
    known = Victims.obfuscate(_plaid(pairs, 2), obf)
    context = AttackContext(
        threat=ThreatModel.A2, params=key.params, public=public,
        pair_originals=known.originals, pair_obfuscated=known.obfuscated,
    )
    return context, Victims.obfuscate(_plaid(6, 3), obf)


def test_curve_scores_held_out_pairs_as_training_goes():
    context, victims = _context(120)
    attack = KnownPlaintextDecoderAttack(
        channels=2, width=4, max_steps=300, max_seconds=60, batch_size=16, lr=1e-2,
        holdout=20, eval_every=100,
    )
    curve = attack.run(context, victims).extra["curve"]
    steps = [row[0] for row in curve]
    assert steps == [100, 200, 300]
    ssims = [row[2] for row in curve]
    # A rank-4 plaid under an exact key is learnable: the held-out score climbs well above its
    # first reading (about 0.1 after 100 steps, 0.55 after 300).
    assert ssims[-1] > ssims[0] + 0.25 and ssims[-1] > 0.4
    assert all(b >= a for a, b in zip([r[1] for r in curve], [r[1] for r in curve][1:]))


def test_no_curve_without_holdout_and_holdout_must_leave_pairs():
    context, victims = _context(30)
    result = KnownPlaintextDecoderAttack(channels=2, width=4, max_steps=5).run(context, victims)
    assert "curve" not in result.extra
    with pytest.raises(ValueError, match="leaves no pair"):
        KnownPlaintextDecoderAttack(channels=2, width=4, max_steps=5, holdout=30).run(
            context, victims
        )
