"""Reconstruction metrics against known values and against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from medveil.metrics import METRIC_NAMES, mse, psnr, reconstruction_metrics, ssim


def smooth_images(count: int, n: int = 32, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / n
    out = np.zeros((count, n, n))
    for i in range(count):
        for _ in range(5):
            cy, cx, s = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
            out[i] += rng.uniform(0.2, 1.0) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)
            )
        out[i] /= out[i].max()
    return torch.tensor(out)


def test_identical_images_are_perfect() -> None:
    x = smooth_images(3)
    m = reconstruction_metrics(x, x)
    assert set(m) == set(METRIC_NAMES)
    assert all(v.shape == (3,) for v in m.values())
    np.testing.assert_allclose(m["ssim"], 1.0, atol=1e-6)  # SSIM windows run in float32
    assert np.all(np.isinf(m["psnr"])) and np.all(np.isinf(m["psnr_unclipped"]))
    np.testing.assert_array_equal(m["mse"], 0.0)


def test_known_mse_gives_known_psnr() -> None:
    x = torch.full((2, 16, 16), 0.5, dtype=torch.float64)
    r = x + torch.tensor([0.1, 0.01], dtype=torch.float64)[:, None, None]
    np.testing.assert_allclose(mse(x, r).numpy(), [1e-2, 1e-4], rtol=1e-9)
    np.testing.assert_allclose(psnr(x, r).numpy(), [20.0, 40.0], rtol=1e-6)


def test_clipping_only_affects_the_clipped_variants() -> None:
    x = torch.full((1, 16, 16), 0.5)
    r = x + 2.0  # far outside [0, 1]: unclipped MSE 4 -> PSNR -6.02 dB; clipped MSE 0.25 -> 6.02 dB
    assert psnr(x, r, clip=False).item() == pytest.approx(-10 * math.log10(4.0))
    assert psnr(x, r, clip=True).item() == pytest.approx(-10 * math.log10(0.25))
    assert mse(x, r, clip=False).item() == pytest.approx(4.0)
    assert reconstruction_metrics(x, r)["psnr_unclipped"][0] < 0


@pytest.mark.parametrize("noise", [0.02, 0.2])
def test_ssim_matches_scikit_image_with_wang_settings(noise: float) -> None:
    x = smooth_images(4, seed=1)
    rng = np.random.default_rng(2)
    r = (x + torch.tensor(rng.normal(0, noise, x.shape))).clamp(0, 1)
    ours = ssim(x, r).numpy()
    theirs = [
        structural_similarity(
            a.numpy(),
            b.numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for a, b in zip(x, r)
    ]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)  # float32 windows; wrong settings: ~1e-2


def test_data_range_is_fixed_not_estimated() -> None:
    # A dim image (values in [0, 0.1]): with data_range estimated from the data SSIM would use
    # L = 0.1; with the fixed L = 1 it must agree with scikit-image at data_range=1.
    x = smooth_images(2, seed=3) * 0.1
    r = x * 0.5
    theirs = [
        structural_similarity(
            a.numpy(),
            b.numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for a, b in zip(x, r)
    ]
    np.testing.assert_allclose(ssim(x, r).numpy(), theirs, atol=1e-5)


def test_accepts_channel_dimension_and_rejects_mismatch() -> None:
    x = smooth_images(2)
    assert ssim(x[:, None], x[:, None]).shape == (2,)
    with pytest.raises(ValueError, match="shape mismatch"):
        ssim(x, x[:1])
