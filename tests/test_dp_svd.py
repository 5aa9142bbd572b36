"""DP-SVD: Laplace noise on the singular values (``SchemeParams.dp_epsilon``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medveil.calibration import calibrate
from medveil.errors import InvalidKeyError
from medveil.keys import Key, SchemeParams, generate_key
from medveil.obfuscator import Obfuscator
from medveil.stages import NoiseSource, perturb_spectrum, truncated_svd


def _factor(batch: int, n: int, k: int, sigma: list[float]) -> torch.Tensor:
    u = torch.linalg.qr(torch.randn(batch, n, k, dtype=torch.float64))[0]
    return u * torch.tensor(sigma, dtype=torch.float64)


def test_spectrum_noise_is_laplace_of_scale_sqrt_k_over_epsilon():
    torch.manual_seed(0)
    k, epsilon = 4, 2.0
    z = _factor(3000, 16, k, [500.0, 400.0, 300.0, 200.0])  # far from 0: no clipping
    out = perturb_spectrum(z, epsilon=epsilon, source=NoiseSource(seed=1))
    sigma = torch.linalg.vector_norm(z, dim=-2)
    noisy = torch.linalg.vector_norm(out, dim=-2)
    deviation = (noisy - sigma).numpy().ravel()
    scale = math.sqrt(k) / epsilon
    # Laplace(b): mean |L| = b and variance 2 b^2; 12,000 draws pin both within a few percent.
    assert abs(np.mean(np.abs(deviation)) - scale) < 0.03 * scale
    assert abs(np.var(deviation) - 2 * scale**2) < 0.08 * 2 * scale**2
    assert abs(np.mean(deviation)) < 0.05 * scale
    # The singular vectors are kept: every column keeps its direction.
    cosine = (out * z).sum(-2) / (noisy * sigma)
    assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-12)


def test_noisy_singular_values_are_clipped_at_zero():
    z = _factor(200, 8, 2, [1e-3, 1e-3])
    out = perturb_spectrum(z, epsilon=0.1, source=NoiseSource(seed=0))
    noisy = torch.linalg.vector_norm(out, dim=-2)
    assert (noisy >= 0).all() and (noisy == 0).any()
    assert torch.isfinite(out).all()


def test_a_zero_column_stays_zero():
    z = torch.zeros(2, 6, 3, dtype=torch.float64)
    z[:, :, 0] = 1.0
    out = perturb_spectrum(z, epsilon=1.0, source=NoiseSource(seed=0))
    assert torch.equal(out[:, :, 1:], z[:, :, 1:])


def test_obfuscator_applies_it_on_the_svd_preset():
    images = torch.rand(8, 32, 32, dtype=torch.float64)
    plain = Obfuscator(generate_key(preset="svd", size=32, rank=4), dtype=torch.float64)
    key = generate_key(preset="svd", size=32, rank=4, dp_epsilon=0.5)
    noisy = Obfuscator(key, dtype=torch.float64)(images)
    exact = plain(images)
    assert not torch.allclose(noisy, exact)
    ratio = torch.linalg.vector_norm(noisy, dim=-2) / torch.linalg.vector_norm(exact, dim=-2)
    assert torch.allclose(noisy, exact * ratio[..., None, :], atol=1e-9)
    # And nothing changes without it.
    assert torch.allclose(exact, truncated_svd(images, 4).factor)


def test_dp_svd_setting_and_key_file_round_trip(tmp_path):
    images = np.random.default_rng(0).random((16, 32, 32), dtype=np.float32)
    key = calibrate(generate_key(preset="dp-svd", size=32, rank=4), images)
    p = key.params
    assert (str(p.preset), p.bits, p.noise, p.dp_epsilon) == ("multistage", None, 0.0, 1.0)
    path = key.save(tmp_path / "keys" / "dp.key")
    loaded = Key.load(path)
    assert loaded.params == p and loaded.fingerprint == key.fingerprint
    assert json.loads(path.read_text())["params"]["dp_epsilon"] == 1.0


def test_keys_without_it_keep_their_file_and_fingerprint(tmp_path):
    key = generate_key(preset="svd", size=32, rank=4)
    assert "dp_epsilon" not in key.params.to_dict()
    path = key.save(tmp_path / "keys" / "svd.key")
    assert "dp_epsilon" not in json.loads(path.read_text())["params"]
    assert Key.load(path).fingerprint == key.fingerprint


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "1"])
def test_invalid_epsilon_is_refused(bad):
    with pytest.raises(InvalidKeyError, match="dp_epsilon"):
        SchemeParams(dp_epsilon=bad)


@pytest.mark.parametrize("name, epsilon", [("private", 2.0), ("balanced", 4.0)])
def test_the_named_dp_settings_are_dp_svd_at_their_epsilon(tmp_path, name, epsilon):
    images = np.random.default_rng(0).random((16, 32, 32), dtype=np.float32)
    key = calibrate(generate_key(preset=name, size=32, rank=4), images)
    p = key.params
    assert (str(p.preset), p.bits, p.noise, p.dp_epsilon) == ("multistage", None, 0.0, epsilon)
    assert p == generate_key(preset="dp-svd", dp_epsilon=epsilon, size=32, rank=4).params
    assert Key.load(key.save(tmp_path / "keys" / f"{name}.key")).params == p
    # The spectrum noise is fresh per draw and reproducible from its seed.
    x = torch.from_numpy(images)
    first = Obfuscator(key, noise_seed=0)(x)
    assert not torch.allclose(first, Obfuscator(key, noise_seed=1)(x))
    assert torch.equal(first, Obfuscator(key, noise_seed=0)(x))
