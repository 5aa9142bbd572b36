"""Obfuscating more images than fit in one batch: the one loop that every caller shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from medveil.obfuscator import Obfuscator

__all__ = ["obfuscate_batches"]


def obfuscate_batches(
    obfuscator: Obfuscator,
    images: torch.Tensor | np.ndarray | Sequence[Any],
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Obfuscate ``(B, n, n)`` images ``batch_size`` at a time into one ``(B, n, m)`` tensor.

    Peak memory is one batch of intermediates plus the output (written in place, never
    concatenated). Every batch gets fresh noise, as a single call would.

    Parameters
    ----------
    obfuscator
        The transform to apply.
    images
        A ``(B, n, n)`` tensor or array, or anything with ``len`` whose slices are such
        batches (e.g. a list of ``(n, n)`` arrays, stacked batch by batch, or a lazy reader).
    batch_size
        Images per call of :meth:`~medveil.obfuscator.Obfuscator.obfuscate`.
    device
        Where each batch is moved and the output lies; by default where the batches are.

    Returns
    -------
    torch.Tensor
        ``(B, n, m)`` in the obfuscator's dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from medveil import Obfuscator, generate_key
    >>> images = np.random.default_rng(0).random((5, 16, 16), dtype=np.float32)
    >>> obfuscator = Obfuscator(generate_key(preset="svd", size=16, rank=4))
    >>> out = obfuscate_batches(obfuscator, images, batch_size=2)
    >>> out.shape, bool((out.numpy() == obfuscator(images)).all())
    (torch.Size([5, 16, 4]), True)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    count = len(images)
    out: torch.Tensor | None = None
    for lo in range(0, count, batch_size):
        batch = images[lo : lo + batch_size]
        if isinstance(batch, list):
            batch = np.stack(batch)
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.asarray(batch))
        y = obfuscator.obfuscate(x if device is None else x.to(device))
        if out is None:
            out = y.new_empty((count, *y.shape[1:]))
        out[lo : lo + len(y)] = y
    if out is None:
        return torch.empty(
            (0, *obfuscator.params.out_shape), dtype=obfuscator.dtype,
            device=torch.device(device) if device is not None else None,
        )
    return out
