from __future__ import annotations

import numpy as np
import pytest
import torch

# Test tensors are tiny: a second intra-op thread only adds synchronisation, and on a busy
# machine its spin-waiting makes the suite several times slower.
torch.set_num_threads(1)


def smooth_images(count: int, size: int, *, seed: int = 0) -> np.ndarray:
    """Images in [0, 1] made of Gaussian blobs: a decaying singular spectrum like real scans."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    out = np.zeros((count, size, size))
    for i in range(count):
        for _ in range(6):
            cy, cx = rng.uniform(-0.7, 0.7, 2)
            sy, sx = rng.uniform(0.1, 0.5, 2)
            out[i] += rng.uniform(0.2, 1) * np.exp(
                -((yy - cy) ** 2 / sy**2 + (xx - cx) ** 2 / sx**2)
            )
        out[i] += 0.05 * rng.standard_normal((size, size))
        out[i] -= out[i].min()
        out[i] /= out[i].max()
    return out.astype(np.float32)


def write_png_folder(
    root, *, classes, per_class: int, seed: int, name: str = "img-{:02d}.png"
) -> list:
    """PNG files of :func:`smooth_images` in one folder per class; returns them in the order a
    store keeps them (class, then name)."""
    from PIL import Image

    images = smooth_images(per_class * len(classes), 40, seed=seed)
    files = []
    for c, label in enumerate(classes):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            path = root / label / name.format(i)
            Image.fromarray((images[c * per_class + i] * 255).astype(np.uint8)).save(path)
            files.append(path)
    return files


@pytest.fixture(scope="session")
def images32() -> np.ndarray:
    return smooth_images(24, 32)


@pytest.fixture(scope="session")
def images64() -> np.ndarray:
    return smooth_images(24, 64, seed=1)
