"""SYNTHETIC medical-image data sets, generated on the fly for tests, demos and benchmarks.

Nothing here comes from a patient. ``brain-mri`` cuts slices from the MNI152 T1 template that
ships inside nilearn and paints class-specific tumour models onto them; ``ovary-us`` simulates
B-mode ultrasound of an ovary from a geometric scene. Both imitate the two real data sets of the
thesis (Kaggle brain-tumour MRI, PCOS ultrasound) closely enough for a classifier to have a
learnable, non-trivial task, and nothing more: never use them to judge clinical performance.

Every image is a pure function of (data set, seed, class, index within class, size), so a batch
rendered by :func:`make_dataset` equals the same images written in pieces by
:func:`medveil.synthetic.write.write_dataset`.
"""

from __future__ import annotations

import importlib
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from medveil.errors import ConfigError

__all__ = ["DATASETS", "SyntheticSpec", "make_dataset", "render_images"]


@dataclass(frozen=True)
class SyntheticSpec:
    """Description of one synthetic data set.

    Attributes
    ----------
    name : str
        The name :func:`make_dataset` takes.
    classes : tuple of str
        Class names; a label is an index into this tuple.
    description : str
        One line saying what the SYNTHETIC images show.
    """

    name: str
    classes: tuple[str, ...]
    description: str


DATASETS: dict[str, SyntheticSpec] = {
    "brain-mri": SyntheticSpec(
        name="brain-mri",
        classes=("glioma", "meningioma", "notumor", "pituitary"),
        description=(
            "SYNTHETIC T1-weighted brain MRI slices (axial, coronal, sagittal) cut from the MNI152 "
            "template, with modelled glioma, meningioma or pituitary tumours, or none"
        ),
    ),
    "ovary-us": SyntheticSpec(
        name="ovary-us",
        classes=("infected", "notinfected"),
        description=(
            "SYNTHETIC B-mode ultrasound sector images of an ovary: polycystic (many small "
            "peripheral follicles) or normal (few follicles)"
        ),
    ),
}

# Renderer modules are imported on first use: the brain one loads a NIfTI volume.
_RENDERERS = {"brain-mri": "medveil.synthetic.brain", "ovary-us": "medveil.synthetic.ovary"}

MIN_SIZE = 32
CHUNK = 64  # images rendered together


class _Renderer(Protocol):
    def render(
        self, labels: np.ndarray, rngs: list[np.random.Generator], size: int
    ) -> np.ndarray: ...


def check_request(name: str, *, per_class: int, size: int, seed: int) -> SyntheticSpec:
    """Validate the common arguments and return the data set's spec.

    Raises
    ------
    ConfigError
        For an unknown name (the message lists the valid ones), ``per_class < 1``,
        ``size < 32`` or a negative seed.
    """
    if name not in DATASETS:
        raise ConfigError(
            f"unknown synthetic data set {name!r}; valid names: {', '.join(sorted(DATASETS))}"
        )
    if int(per_class) < 1:
        raise ConfigError(f"per_class must be at least 1, got {per_class}")
    if int(size) < MIN_SIZE:
        raise ConfigError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    if int(seed) < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    return DATASETS[name]


def image_rngs(
    name: str, seed: int, labels: np.ndarray, indices: np.ndarray
) -> list[np.random.Generator]:
    """One independent generator per image, keyed by (data set, seed, class, index)."""
    tag = zlib.crc32(name.encode())  # stable across processes, unlike hash()
    return [
        np.random.default_rng([int(seed), tag, int(c), int(i)])
        for c, i in zip(labels, indices, strict=True)
    ]


def render_images(
    name: str, *, labels: np.ndarray, indices: np.ndarray, size: int, seed: int
) -> np.ndarray:
    """Render chosen images of a SYNTHETIC data set.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    labels : numpy.ndarray
        Class index of each image.
    indices : numpy.ndarray
        Index of each image within its class.
    size : int
        Side of the square images in pixels.
    seed : int
        Seed of the whole data set.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(len(labels), size, size)`` with values in [0, 1].
    """
    renderer: _Renderer = importlib.import_module(_RENDERERS[name])  # type: ignore[assignment]
    labels = np.asarray(labels, dtype=np.int64)
    rngs = image_rngs(name, seed, labels, np.asarray(indices))
    out = np.empty((len(labels), size, size), dtype=np.float32)
    # Chunks bound the memory of the per-pixel intermediate tensors.
    for start in range(0, len(labels), CHUNK):
        stop = start + CHUNK
        out[start:stop] = renderer.render(labels[start:stop], rngs[start:stop], int(size))
    return out


def make_dataset(
    name: str, *, per_class: int, size: int = 224, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a balanced SYNTHETIC data set in memory.

    Parameters
    ----------
    name : str
        ``"brain-mri"`` or ``"ovary-us"`` (see :data:`DATASETS`).
    per_class : int
        Number of images of each class (at least 1).
    size : int, default 224
        Side of the square images in pixels (at least 32).
    seed : int, default 0
        Same seed and arguments give identical arrays.

    Returns
    -------
    images : numpy.ndarray
        float32, shape ``(N, size, size)``, values in [0, 1]; ``N = per_class * n_classes``,
        grouped by class in the order of ``DATASETS[name].classes``.
    labels : numpy.ndarray
        int64, shape ``(N,)``: index of each image's class.

    Raises
    ------
    ConfigError
        Unknown name, ``per_class < 1``, ``size < 32`` or negative seed.
    """
    spec = check_request(name, per_class=per_class, size=size, seed=seed)
    labels = np.repeat(np.arange(len(spec.classes), dtype=np.int64), per_class)
    indices = np.tile(np.arange(per_class), len(spec.classes))
    images = render_images(name, labels=labels, indices=indices, size=size, seed=seed)
    return images, labels
