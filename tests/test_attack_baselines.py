"""Each attack against a trivial baseline, on cases built so that it must beat it.

The baselines are the mean public image (the yardstick, which ignores the victim) and, for the
Minimum Difference Attack, its own starting point. Each attack must clear the yardstick by a
wide margin where the scheme is invertible for it, and fall below it with the wrong key.
Re-identification and the keyless look-alikes are checked on ``multistage`` as well as ``svd``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_attacks import RANK, N, _a2, blobs, exact_key, mean_ssim, pinned, plaid, twin, victims_of

from medveil.attacks import (
    AttackContext,
    KnownPlaintextLinearAttack,
    LeadingBitAttack,
    MeanImageBaseline,
    MinimumDifferenceAttack,
    NearestPublicAttack,
    PublicBasisAttack,
    ReidentificationAttack,
    ThreatModel,
)
from medveil.calibration import calibrate
from medveil.keys import SchemeParams
from medveil.metrics import ssim
from medveil.obfuscator import Obfuscator


@pytest.fixture(scope="module")
def sets() -> dict[str, torch.Tensor]:
    return {"public": plaid(60, 1), "victims": plaid(8, 2), "pairs": plaid(200, 3)}


@pytest.mark.parametrize("attack", ["public_basis", "lba", "mda", "kpl"])
def test_each_attack_beats_the_yardstick_and_falls_below_it_with_a_wrong_key(
    sets: dict[str, torch.Tensor], attack: str
) -> None:
    public, images = sets["public"], sets["victims"]
    key = exact_key(public, rank=RANK)
    victims = victims_of(images, key)
    stranger = victims_of(images, twin(key, public))  # the same victims under another key
    a1 = AttackContext(threat=ThreatModel.A1, params=key.params, public=public)
    yardstick = mean_ssim(MeanImageBaseline().run(a1, victims))
    chosen, context = {
        "public_basis": (PublicBasisAttack(), None),
        "lba": (LeadingBitAttack(), None),
        "mda": (MinimumDifferenceAttack(steps=10, init="public_basis"), None),
        "kpl": (KnownPlaintextLinearAttack(alphas=(1e-6,)), _a2(key, sets)),
    }[attack]
    if context is None:
        context = AttackContext(threat=ThreatModel.A3, params=key.params, public=public, key=key)
    assert 0.3 < yardstick < 0.5
    assert mean_ssim(chosen.run(context, victims)) > yardstick + 0.45
    assert mean_ssim(chosen.run(context, stranger)) < yardstick - 0.2


# --- the Minimum Difference Attack and its starting point -------------------------------------


def test_mda_leaves_an_exact_start_where_it_is(sets: dict[str, torch.Tensor]) -> None:
    # The public-basis start is exact here (SSIM 1.000). A step that does not shrink with the
    # gradient walked away from it: SSIM 0.96 after 30 steps.
    public, images = sets["public"], sets["victims"][:4]
    key = exact_key(public, rank=RANK)
    context = AttackContext(threat=ThreatModel.A3, params=key.params, public=public, key=key)
    victims = victims_of(images, key)
    start = MinimumDifferenceAttack(steps=0, tv_weight=0.0, init="public_basis").run(
        context, victims
    )
    assert mean_ssim(start) > 0.999
    for tv_weight in (0.0, 0.01):
        attack = MinimumDifferenceAttack(steps=30, tv_weight=tv_weight, init="public_basis")
        result = attack.run(context, victims)
        assert mean_ssim(result) > 0.995
        if tv_weight == 0.0:
            assert result.extra["relative_residual_mean"] < 1e-9
        assert result.extra["objective_end_mean"] <= result.extra["objective_start_mean"]


@pytest.mark.parametrize("scheme", ["svd", "left-only"])
def test_mda_must_improve_on_its_start_where_the_start_shares_the_victims_basis(
    scheme: str,
) -> None:
    # Shared row profiles: every image, and the public mean, has the same right singular
    # vectors, so the data term identifies the victim from the mean. Exact recovery, from a
    # start at SSIM 0.97 and MSE 5e-3; with another key it fits the wrong data.
    public, images = plaid(60, 1, shared_rows=True), plaid(6, 2, shared_rows=True)
    if scheme == "svd":
        params = SchemeParams.for_preset("svd", size=N, rank=RANK)
    else:
        params = SchemeParams(
            preset="multistage", size=N, rank=RANK, bits=None, noise=0.0, right="none"
        )
    key = calibrate(pinned(params, "victims"), public)
    victims = victims_of(images, key)
    if scheme == "svd":
        context = AttackContext(threat=ThreatModel.A1, params=key.params, public=public)
    else:
        context = AttackContext(threat=ThreatModel.A3, params=key.params, public=public, key=key)
    start = MinimumDifferenceAttack(steps=0).run(context, victims)
    result = MinimumDifferenceAttack(steps=10, tv_weight=0.0).run(context, victims)
    assert start.summary()["mse_mean"] > 1e-3 and mean_ssim(start) < 0.98
    assert result.summary()["mse_mean"] < start.summary()["mse_mean"] / 100
    assert float(result.metrics["ssim"].min()) > 0.999
    assert result.extra["objective_end_mean"] < result.extra["objective_start_mean"] / 100
    if scheme != "svd":
        wrong = AttackContext(
            threat=ThreatModel.A3, params=key.params, public=public, key=twin(key, public)
        )
        astray = MinimumDifferenceAttack(steps=10, tv_weight=0.0).run(wrong, victims)
        assert astray.summary()["mse_mean"] > 10 * start.summary()["mse_mean"]


def mda_objective(key, victims, x: torch.Tensor, tv_weight: float) -> np.ndarray:
    """``||Obf_K(X; noise off) - Y||^2 / ||Y||^2 + lambda TV(X)`` per image, recomputed with the
    obfuscator itself (the key's stages, noise switched off) and TV written out here."""
    quiet = key.with_params(noise=0.0)
    quiet.calibration = key.calibration
    y = victims.obfuscated.double()
    misfit = ((Obfuscator(quiet, dtype=torch.float64)(x.double()) - y) ** 2).sum(dim=(1, 2))
    tv = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(1, 2)) + (x[:, :, 1:] - x[:, :, :-1]).abs().mean(
        dim=(1, 2)
    )
    return (misfit / (y * y).sum(dim=(1, 2)) + tv_weight * tv.double()).numpy()


def test_mda_returns_its_best_iterate_so_more_steps_never_score_worse() -> None:
    # Natural-image-like victims under the default stages: the iterates are not monotone (V_k
    # moves with X, quantization and noise leave a floor), but the best of the first s steps
    # can only improve with s, and never on the start.
    public, images = blobs(40, 1), blobs(6, 2)
    key = calibrate(pinned(SchemeParams(preset="multistage", size=N, rank=8), "victims"), public)
    context = AttackContext(threat=ThreatModel.A3, params=key.params, public=public, key=key)
    victims = victims_of(images, key)
    scores = []
    for steps in (0, 4, 8, 16, 32):
        result = MinimumDifferenceAttack(steps=steps).run(
            context, victims, keep_reconstructions=True
        )
        assert result.reconstructions is not None
        x = result.reconstructions
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        scores.append(mda_objective(key, victims, x, 0.01))
    scores = np.stack(scores)
    assert (np.diff(scores, axis=0) <= 1e-4 * scores[0]).all()
    assert (scores[-1] < scores[0] / 3).all() and np.median(scores[-1] / scores[0]) < 0.1


# --- re-identification and look-alikes on multistage ------------------------------------------


def test_reid_on_multistage_matches_every_victim_when_stages_are_exact() -> None:
    # R_L keeps the spectrum and R_R distorts it the same way for every image, so after
    # standardising each feature within each set the spectra match (unstandardised: 1 of 20).
    public, images = blobs(80, 1), blobs(20, 2)
    params = SchemeParams(preset="multistage", size=N, rank=8, bits=None, noise=0.0)
    key = calibrate(pinned(params, "victims"), public)
    context = AttackContext(threat=ThreatModel.A1, params=key.params, public=public)
    summary = ReidentificationAttack().run(context, victims_of(images, key)).summary()
    assert summary["chance_top1"] == pytest.approx(1 / 100)
    assert summary["top1_mean"] == 1.0


def test_reid_on_default_multistage_beats_chance_and_fails_on_identical_spectra() -> None:
    public, images = blobs(80, 1), blobs(20, 2)
    key = calibrate(pinned(SchemeParams(preset="multistage", size=N, rank=8), "victims"), public)
    context = AttackContext(threat=ThreatModel.A1, params=key.params, public=public)
    summary = ReidentificationAttack().run(context, victims_of(images, key)).summary()
    assert summary["top5_mean"] >= 0.25  # chance 0.05
    # Circular shifts of one image share their spectrum: nothing to match by.
    base = blobs(1, 3)[0]
    shifted = torch.stack([torch.roll(base, s, dims=0) for s in range(N)])
    same = AttackContext(threat=ThreatModel.A1, params=key.params, public=shifted[::2])
    result = ReidentificationAttack().run(same, victims_of(shifted[1::2], key))
    assert result.summary()["top1_mean"] <= 0.25


def test_keyless_look_alikes_on_multistage_beat_the_yardstick() -> None:
    public = blobs(60, 1)
    images = public[:12] * 0.97 + 0.02  # look-alikes of public images, not copies
    params = SchemeParams(preset="multistage", size=N, rank=8, bits=None, noise=0.0)
    key = calibrate(pinned(params, "victims"), public)
    victims = victims_of(images, key)
    a1 = AttackContext(threat=ThreatModel.A1, params=key.params, public=public)
    yardstick = mean_ssim(MeanImageBaseline().run(a1, victims))
    result = NearestPublicAttack(neighbours=(1, 5)).run(a1, victims, keep_reconstructions=True)
    assert set(result.extra["variants"]) == {"spectrum-nn1", "spectrum-nn5"}
    nn1 = result.extra["variants"]["spectrum-nn1"]["ssim_mean"]
    assert nn1 > yardstick + 0.2
    # The look-alike it returns is the public image the victim was made from, for most victims.
    picked = NearestPublicAttack(neighbours=(1,)).fit(a1, victims.obfuscated, {})(
        victims.obfuscated
    )["spectrum-nn1"]
    hits = [bool(torch.equal(picked[i], public[i])) for i in range(len(images))]
    assert np.mean(hits) >= 0.5
    assert float(ssim(images, picked).mean()) == pytest.approx(nn1, abs=1e-4)
