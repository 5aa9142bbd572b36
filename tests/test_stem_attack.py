"""The trainer's stem attack: an exact-unmixing stem reads the victims as the factor does, a
random stem reads nothing, and the in-span bound of the exact unmixing is itself."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from medveil.attacks import AttackContext, NearestPublicAttack, NotApplicableError, Victims
from medveil.attacks.stem import exact_unmixing, in_span, stem_attack
from medveil.calibration import calibrate
from medveil.keys import Key, generate_key
from medveil.obfuscator import Obfuscator
from medveil.synthetic import make_dataset
from medveil.training.stems import TwoSidedStem, create_stem

N, K, S = 32, 8, 16
VICTIMS = 20


@pytest.fixture(scope="module")
def scene():
    """Brain phantoms: 20 victims, 60 public images, a pinned multistage key, the outputs."""
    images, _ = make_dataset("brain-mri", per_class=20, size=N, seed=0)
    params = generate_key(preset="multistage", size=N, rank=K).params
    key = calibrate(Key(secret=hashlib.sha256(b"stem-attack").digest(), params=params), images)
    obfuscated = Obfuscator(key, noise_seed=0)(images[:VICTIMS])
    matrices = {"left": key.left_matrix(), "right": key.right_matrix()}
    return images, key, obfuscated, matrices


def _stem(left: np.ndarray, right: np.ndarray) -> TwoSidedStem:
    stem = create_stem("linear", in_shape=(N, N), size=S)
    with torch.no_grad():
        stem.left.copy_(torch.from_numpy(left))
        stem.right.copy_(torch.from_numpy(right))
    return stem


def _attack(stem, scene, **options):
    images, key, obfuscated, matrices = scene
    return stem_attack(
        stem, victims_obfuscated=obfuscated, victim_originals=images[:VICTIMS],
        public=images[VICTIMS:], params=key.params, key_matrices=matrices, **options,
    )


def test_the_in_span_bound_of_the_exact_unmixing_is_the_exact_unmixing(scene):
    _, key, _, matrices = scene
    target = exact_unmixing(n=N, k=K, size=S, left=matrices["left"], right=matrices["right"])
    left, right = in_span(*target, target_left=target[0], target_right=target[1])
    assert np.allclose(left, target[0], atol=1e-10) and np.allclose(right, target[1], atol=1e-10)
    # A stem spanning only part of the target keeps only that part: the resize's row space is
    # not L*'s, so its bound differs from L* by a sizeable share.
    resize = create_stem("resize", in_shape=(N, N), size=S)
    part, _ = in_span(
        resize.left.double().numpy(), resize.right.double().numpy(),
        target_left=target[0], target_right=target[1],
    )
    assert 0.3 < np.linalg.norm(part) / np.linalg.norm(target[0]) < 0.95


def test_an_exact_unmixing_stem_re_identifies_and_beats_the_yardstick(scene):
    images, key, obfuscated, matrices = scene
    exact = exact_unmixing(n=N, k=K, size=S, left=matrices["left"], right=matrices["right"])
    result = _attack(_stem(*exact), scene)
    real = result.realistic
    assert result.pool_size == len(images) and result.chance_top1 == 1 / len(images)
    # Every victim found among 80 candidates (chance 1/80) without the key.
    assert real.reid_top1 >= 0.95 and real.reid_top5 == 1.0
    # The reconstructions through the stem beat the mean public image: the re-synthesis on the
    # public basis and the decoder fitted on the public images alike.
    assert real.variants["pb"] > result.yardstick_ssim + 0.02
    assert real.variants["ridge"] > result.yardstick_ssim + 0.015
    assert real.reconstruction_ssim == max(real.variants.values())
    # Look-alikes as good as the factor feature picks them with the key (A3).
    context = AttackContext(
        threat="A3", params=key.params, public=torch.from_numpy(images[VICTIMS:]), key=key
    )
    victims = Victims(
        torch.from_numpy(images[:VICTIMS]), torch.from_numpy(obfuscated),
        tuple(str(i) for i in range(VICTIMS)),
    )
    factor = NearestPublicAttack().run(context, victims).extra["variants"]
    assert real.lookalike_ssim[5] == pytest.approx(factor["factor-nn5"]["ssim_mean"], abs=0.03)
    assert real.lookalike_ssim[1] == pytest.approx(factor["factor-nn1"]["ssim_mean"], abs=0.03)
    # The stem is its own in-span bound, and the alignment calls it a full recovery.
    assert result.bound.reid_top1 == real.reid_top1
    assert result.bound.reconstruction_ssim == pytest.approx(real.reconstruction_ssim, abs=1e-6)
    assert result.alignment["left"] == pytest.approx(1.0) and result.alignment["right"] == (
        pytest.approx(1.0)
    )


def test_a_random_stem_reads_nothing_of_the_victims(scene):
    images, key, obfuscated, matrices = scene
    exact = _attack(
        _stem(*exact_unmixing(n=N, k=K, size=S, left=matrices["left"], right=matrices["right"])),
        scene,
    )
    rng = np.random.default_rng(3)
    result = _attack(_stem(rng.normal(size=(S, N)), rng.normal(size=(N, S))), scene)
    real = result.realistic
    # Chance is 1/80 per victim: at most 2 of 20 by luck.
    assert real.reid_top1 <= 0.1
    # The public-basis re-synthesis is noise; the fitted decoder falls back to (at most) the
    # mean image, which is the yardstick.
    assert real.variants["pb"] < result.yardstick_ssim - 0.03
    assert real.variants["ridge"] < result.yardstick_ssim + 0.005
    assert real.lookalike_ssim[5] < exact.realistic.lookalike_ssim[5] - 0.02
    # The bound (with the key) is what the random spans happen to hold of L*, R*: at these
    # sizes half of each side, which already re-identifies; it is an upper bound, not A1.
    assert result.bound.reid_top1 > 0.5


def test_the_stem_must_read_the_schemes_output_and_the_key_must_fit(scene):
    images, key, obfuscated, matrices = scene
    wrong = create_stem("linear", in_shape=(N, K), size=S)
    with pytest.raises(NotApplicableError, match="reads 32 x 8 arrays"):
        _attack(wrong, scene)
    with pytest.raises(NotApplicableError, match="R_L"):
        stem_attack(
            create_stem("linear", in_shape=(N, N), size=S), victims_obfuscated=obfuscated,
            victim_originals=images[:VICTIMS], public=images[VICTIMS:], params=key.params,
            key_matrices={"right": matrices["right"]},
        )
