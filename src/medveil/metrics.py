"""Per-image reconstruction metrics: SSIM, PSNR (clipped and unclipped) and MSE.

Images are ``(B, n, n)`` (or ``(B, 1, n, n)``) tensors whose originals lie in [0, 1]. The data range
is always the constant :data:`DATA_RANGE` = 1: estimating it from the data would let a
reconstruction with a wild range inflate or deflate the score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from medveil.shapes import image_batch

__all__ = [
    "DATA_RANGE",
    "METRIC_NAMES",
    "SSIM_KERNEL",
    "SSIM_SIGMA",
    "mse",
    "psnr",
    "reconstruction_metrics",
    "ssim",
]

DATA_RANGE = 1.0
SSIM_KERNEL = 11
SSIM_SIGMA = 1.5

#: Names of the columns returned by :func:`reconstruction_metrics`, in order.
METRIC_NAMES = ("ssim", "psnr", "psnr_unclipped", "mse")


def _as_batch(images: Any) -> torch.Tensor:
    # float64 keeps PSNR of near-perfect reconstructions (MSE ~ 1e-12) meaningful.
    return image_batch(images).to(torch.float64)


def _pair(original: Any, reconstruction: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, r = _as_batch(original), _as_batch(reconstruction)
    if x.shape != r.shape:
        raise ValueError(
            f"shape mismatch: original {tuple(x.shape)}, reconstruction {tuple(r.shape)}"
        )
    return x, r.to(x.device)


def ssim(original: Any, reconstruction: Any) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of the reconstruction clipped to [0, 1].

    Gaussian window 11 x 11, sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, ``L = 1``:
    ``SSIM = mean over windows of (2 mu_x mu_r + C1)(2 s_xr + C2) / ((mu_x^2 + mu_r^2 + C1)(s_x^2 + s_r^2 + C2))``
    with ``C1 = (K1 L)^2`` and ``C2 = (K2 L)^2``, over the windows that lie inside the image
    (as scikit-image's ``structural_similarity``). Images must be larger than 11 x 11.
    Returns a ``(B,)`` float64 tensor; the windows are computed in float32 (within about 1e-6
    of float64), because CPU convolutions in float64 are about ten times slower.
    """
    x, r = _pair(original, reconstruction)
    _, ssim_map = structural_similarity_index_measure(
        r.clamp(0.0, 1.0)[:, None].float(),
        x[:, None].float(),
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=SSIM_KERNEL,
        data_range=DATA_RANGE,
        reduction="none",
        return_full_image=True,
    )
    # torchmetrics averages the map over reflect-padded borders too; Wang et al.'s reference
    # (and scikit-image) average over the windows that fit inside the image. At 32 px the
    # difference is ~0.04, so average the interior map, as the reference does.
    pad = SSIM_KERNEL // 2
    return ssim_map[:, 0, pad:-pad, pad:-pad].double().mean(dim=(-2, -1))


def psnr(original: Any, reconstruction: Any, *, clip: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB: ``10 log10(L^2 / MSE)`` with ``L = 1``.

    With ``clip=True`` the reconstruction is clipped to [0, 1] first (what a user would display);
    with ``clip=False`` it is taken as is, so PSNR can be negative when ``MSE > 1``.
    A perfect reconstruction gives ``inf``. Returns a ``(B,)`` float64 tensor.
    """
    x, r = _pair(original, reconstruction)
    if clip:
        r = r.clamp(0.0, 1.0)
    return peak_signal_noise_ratio(r, x, data_range=DATA_RANGE, reduction="none", dim=(1, 2))


def mse(original: Any, reconstruction: Any, *, clip: bool = True) -> torch.Tensor:
    """Per-image mean squared error ``mean((X - X_hat)^2)``, ``X_hat`` clipped to [0, 1] by default."""
    x, r = _pair(original, reconstruction)
    if clip:
        r = r.clamp(0.0, 1.0)
    return ((x - r) ** 2).mean(dim=(1, 2))


def reconstruction_metrics(original: Any, reconstruction: Any) -> dict[str, np.ndarray]:
    """All per-image metrics of a batch as float64 NumPy arrays keyed by :data:`METRIC_NAMES`.

    ``ssim``, ``psnr`` and ``mse`` use the reconstruction clipped to [0, 1] (the attacker knows
    images lie there); ``psnr_unclipped`` uses it as is.
    """
    return {
        "ssim": ssim(original, reconstruction).cpu().numpy(),
        "psnr": psnr(original, reconstruction, clip=True).cpu().numpy(),
        "psnr_unclipped": psnr(original, reconstruction, clip=False).cpu().numpy(),
        "mse": mse(original, reconstruction, clip=True).cpu().numpy(),
    }
