"""Calibration of a key's constants (quantizer range, output standardisation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medveil.dicomweb import RetryPolicy, is_dicomweb_url
from medveil.errors import ImageLoadError, LoadError
from medveil.keys import Calibration, Key
from medveil.layout import DatasetIndex, Item, scan_dataset, scan_labels
from medveil.loading import LoadOptions, load_slices
from medveil.obfuscator import Obfuscator
from medveil.shapes import image_batch
from medveil.stages import truncated_svd

__all__ = ["MAX_PERCENTILE_SAMPLES", "calibrate", "load_calibration_images"]

MAX_PERCENTILE_SAMPLES = 4_000_000


def _as_batches(images: Any, batch_size: int) -> list[torch.Tensor]:
    if isinstance(images, (np.ndarray, torch.Tensor)):
        images = [images]
    batches = []
    for item in images:
        t = image_batch(item, what="calibration images", error=LoadError)
        for start in range(0, len(t), batch_size):
            batches.append(t[start : start + batch_size].to(torch.float32))
    if not batches or sum(len(b) for b in batches) == 0:
        raise LoadError("calibration needs at least one image")
    return batches


def calibrate(key: Key, images: Any, *, batch_size: int = 256) -> Key:
    """``key`` with its quantizer range and output standardisation fixed from images in [0, 1].

    ``c`` is the ``clip_percentile``-th percentile of ``|Z|`` over all entries of the truncated
    factors; ``mean`` and ``std`` are those of the projected outputs (fresh noise included), so
    that the standardised output has zero mean and unit variance on the calibration set.

    Parameters
    ----------
    key
        The key to calibrate; it is left unchanged.
    images
        An array or tensor ``(B, n, n)`` or ``(B, 1, n, n)`` in [0, 1], or an iterable of such
        batches.
    batch_size
        Images pushed through the transform at once.

    Returns
    -------
    Key
        A key with the same secret, parameters and derivation and the new
        :class:`~medveil.keys.Calibration` (``svd`` keys get the identity constants).

    Raises
    ------
    LoadError
        No image, images of the wrong shape, or images whose factors are all zero.

    Examples
    --------
    >>> import numpy as np
    >>> from medveil import generate_key
    >>> from medveil.calibration import calibrate
    >>> images = np.random.default_rng(0).random((4, 16, 16), dtype=np.float32)
    >>> key = calibrate(generate_key(size=16, rank=4), images)
    >>> key.is_calibrated, key.calibration.images
    (True, 4)
    """
    p = key.params
    batches = _as_batches(images, batch_size)
    count = sum(len(b) for b in batches)
    if not p.needs_calibration:
        return replace(key, calibration=Calibration(clip=1.0, mean=0.0, std=1.0, images=count))
    magnitudes = []
    for batch in batches:
        z = truncated_svd(batch, p.rank, solver=p.solver).factor
        magnitudes.append(z.abs().flatten().numpy())
    pooled = np.concatenate(magnitudes)
    if pooled.size > MAX_PERCENTILE_SAMPLES:
        pooled = np.random.default_rng(0).choice(pooled, MAX_PERCENTILE_SAMPLES, replace=False)
    clip = float(np.percentile(pooled, p.clip_percentile))
    if not clip > 0:
        raise LoadError("calibration images give an all-zero factor; use real images")
    provisional = replace(key, calibration=Calibration(clip=clip, mean=0.0, std=1.0, images=count))
    obf = Obfuscator(provisional)
    total, total_sq, entries = 0.0, 0.0, 0
    for batch in batches:
        y = obf.obfuscate(batch).double()
        total += float(y.sum())
        total_sq += float((y * y).sum())
        entries += y.numel()
    mean = total / entries
    std = max((total_sq / entries - mean * mean), 0.0) ** 0.5
    return replace(key, calibration=Calibration(clip=clip, mean=mean, std=std, images=count))


def load_calibration_images(
    source: str | Path,
    *,
    count: int,
    options: LoadOptions,
    seed: int = 0,
    labels: str | Path | None = None,
    retry: RetryPolicy | None = None,
) -> np.ndarray:
    """Up to ``count`` images drawn evenly at random (seeded) from a dataset folder, the files
    a ``labels`` CSV names in a folder, or (``source`` a DICOMweb URL) the instances of the
    studies a ``labels`` CSV names, retrieved in memory (:mod:`medveil.dicomweb`).

    Bad files are passed over (calibration only needs representative images); an error is
    raised only when none loads.
    """
    if is_dicomweb_url(source):
        from medveil.dicomweb.client import DicomWebSource  # its HTTP stack: PACS only

        with DicomWebSource(str(source), retry=retry) as pacs:
            index = pacs.scan(labels)
            return _draw(
                index, lambda item: pacs.read(item, options=options).slices,  # type: ignore[arg-type]
                count=count, seed=seed, name=pacs.url,
            )
    index = scan_labels(source, labels) if labels is not None else scan_dataset(source)
    return _draw(
        index, lambda item: load_slices(index.root / item.path, options=options),
        count=count, seed=seed, name=str(index.root),
    )


def _draw(
    index: DatasetIndex,
    read: Callable[[Item], list[np.ndarray]],
    *,
    count: int,
    seed: int,
    name: str,
) -> np.ndarray:
    items = [item for items in index.splits.values() for item in items]
    order = np.random.default_rng(seed).permutation(len(items))
    images: list[np.ndarray] = []
    problems: list[str] = []
    for i in order:
        if len(images) >= count:
            break
        try:
            images.extend(read(items[i]))
        except ImageLoadError as exc:
            problems.append(str(exc))
    if not images:
        raise ImageLoadError(name, f"no calibration image could be loaded ({'; '.join(problems[:3])})")
    return np.stack(images[:count])
