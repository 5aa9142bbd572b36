"""Model inputs: the dataset's standardisation, resizing to the model's input, augmentation.

:class:`ExampleSet` serves model inputs standardised with constants fitted on the training split
only (:class:`Standardisation`): at the arrays' own shape for a model with an input stem
(:mod:`medveil.training.stems`, which then maps them to the model's input), or resized
(antialiased bilinear, :func:`to_model_input`) to the model's input size.

Augmentation (:func:`augment_batch`) is off by default. Flips and shifts are symmetries of
natural images, but an obfuscated array's rows and columns are mixed by keyed projections (or
are singular vectors, for the ``svd`` preset), so a flipped or shifted array is not one the key
could produce. Measured on the real brain-tumour MRI training set (4 classes, 300 random images
per class, stratified 20% test = 240 images, 15% of the rest for validation), ``smallcnn``,
64 px, 12 epochs, batch 32, AdamW lr 2e-3 one-cycle, seed 0, test accuracy
(none / flip / flip-shift; one seed, standard error about 2 points):

- plaintext: 0.888 / 0.858 / 0.846
- ``svd`` preset, k = 16 (Z resized to 64x64): 0.738 / 0.738 / 0.663
- right projection only (k = 16, 8 bits, eta 0.02): 0.713 / 0.708 / 0.675

Flips never helped and shifts cost 4-8 points on obfuscated arrays, so no augmentation is the
default everywhere; at this short budget it is also the best choice for plaintext. These come
from a one-off probe whose script was not kept; ``benchmarks/utility.py --augment MODE`` reruns
the comparison at full scale, and its numbers belong in ``docs/RESULTS.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medveil.errors import ConfigError, LoadError
from medveil.training.sources import ArrayTable

__all__ = [
    "AUGMENTATIONS",
    "STATS_SAMPLE",
    "ExampleSet",
    "Standardisation",
    "augment_batch",
    "to_model_input",
]

AUGMENTATIONS = ("none", "flip", "flip-shift")
STATS_SAMPLE = 2048  # training examples used to fit the standardisation constants


@dataclass(frozen=True)
class Standardisation:
    """``x' = (x - mean) / std`` with one mean and std for the whole dataset."""

    mean: float
    std: float

    @classmethod
    def fit(cls, table: ArrayTable, indices: np.ndarray, *, seed: int) -> Standardisation:
        """Fit on (up to :data:`STATS_SAMPLE` of) the training examples, at their own shape (as
        the model's input stem reads them)."""
        rng = np.random.default_rng([seed, 0x57D])
        if len(indices) > STATS_SAMPLE:
            indices = np.sort(rng.choice(indices, STATS_SAMPLE, replace=False))
        total = total_sq = count = 0.0
        for lo in range(0, len(indices), 256):
            x = torch.from_numpy(np.asarray(table.arrays(indices[lo : lo + 256]), np.float64))
            total += float(x.sum())
            total_sq += float((x * x).sum())
            count += x.numel()
        mean = total / count
        std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
        if not std > 1e-12:
            raise LoadError("the training images are constant: nothing to learn from")
        return cls(mean=mean, std=std)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def to_model_input(
    arrays: np.ndarray, *, size: int | None, standardisation: Standardisation | None = None
) -> torch.Tensor:
    """``(B, h, w)`` arrays to a ``(B, 1, size, size)`` float32 tensor.

    Arrays of another shape are resized with antialiased bilinear interpolation; an obfuscated
    ``(n, m)`` array (``m = k`` for the ``svd`` preset) is stretched to the square input. With
    ``size=None`` the arrays keep their shape, ``(B, 1, h, w)``, for a model with an input stem.
    """
    x = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32))[:, None]
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return x if standardisation is None else standardisation.apply(x)


class ExampleSet(Dataset):
    """Model inputs ``(tensor (1, h, w), label)`` for ``indices`` of one table, standardised and at
    the arrays' own shape (the model's input stem makes its square input).

    Implements ``__getitems__`` so that a ``DataLoader`` reads a whole batch at once.
    """

    def __init__(
        self,
        table: ArrayTable,
        indices: np.ndarray,
        *,
        standardisation: Standardisation,
    ) -> None:
        self.table = table
        self.indices = np.asarray(indices, np.int64)
        self.standardisation = standardisation

    @property
    def labels(self) -> np.ndarray:
        return self.table.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: list[int]) -> list[tuple[torch.Tensor, int]]:
        rows = self.indices[np.asarray(positions, np.int64)]
        x = to_model_input(
            self.table.arrays(rows), size=None, standardisation=self.standardisation
        )
        return list(zip(x, self.table.labels[rows].tolist()))


def augment_batch(x: torch.Tensor, mode: str, *, generator: torch.Generator) -> torch.Tensor:
    """Random per-example augmentation of a ``(B, 1, h, w)`` batch.

    ``none`` returns ``x``; ``flip`` mirrors half of the examples left-right; ``flip-shift`` also
    translates each by up to 1/8 of each side (reflect padding, then a random crop). Neither is
    a symmetry of obfuscated arrays (see the module notes for what they cost there).
    """
    if mode not in AUGMENTATIONS:
        raise ConfigError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {mode!r}")
    if mode == "none":
        return x
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    if mode == "flip-shift":
        height, width = x.shape[-2:]
        pad_y, pad_x = max(height // 8, 1), max(width // 8, 1)
        padded = F.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="reflect")
        offsets = torch.stack(
            [
                torch.randint(0, 2 * pad_y + 1, (len(x),), generator=generator),
                torch.randint(0, 2 * pad_x + 1, (len(x),), generator=generator),
            ],
            dim=1,
        ).tolist()
        x = torch.stack(
            [
                padded[i, :, dy : dy + height, dx : dx + width]
                for i, (dy, dx) in enumerate(offsets)
            ]
        )
    return x
