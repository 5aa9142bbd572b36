"""The one place that reads the image layouts medveil accepts as a ``(B, n, n)`` batch.

Images come as one ``(n, n)`` image, a ``(B, n, n)`` batch or a one-channel ``(B, 1, n, n)``
batch (the layout of a ``DataLoader``), as torch tensors, NumPy arrays or nested lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["image_batch"]


def image_batch(
    images: Any, *, what: str = "images", error: type[Exception] = ValueError
) -> torch.Tensor:
    """``images`` as a ``(B, n, n)`` tensor, sharing memory with the input where it can.

    Parameters
    ----------
    images
        ``(n, n)``, ``(B, n, n)`` or ``(B, 1, n, n)``: a tensor (its dtype and device are kept),
        a NumPy array or anything :func:`numpy.asarray` reads.
    what
        What the images are, for the error message.
    error
        The exception raised for another layout (a subclass of :class:`ValueError`, e.g.
        :class:`medveil.errors.LoadError` where the images come from the user's files).

    Raises
    ------
    ValueError
        (or ``error``) the images have more than one channel or another number of axes.

    Examples
    --------
    >>> import numpy as np
    >>> image_batch(np.zeros((4, 1, 8, 8), np.float32)).shape
    torch.Size([4, 8, 8])
    >>> image_batch(np.zeros((8, 8))).shape
    torch.Size([1, 8, 8])
    >>> image_batch(np.zeros((2, 3, 8, 8)), what="calibration images")
    Traceback (most recent call last):
    ...
    ValueError: calibration images must have one channel, (B, 1, n, n), got (2, 3, 8, 8)
    """
    t = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if t.ndim == 2:
        return t[None]
    if t.ndim == 4:
        if t.shape[1] != 1:
            raise error(f"{what} must have one channel, (B, 1, n, n), got {tuple(t.shape)}")
        return t[:, 0]
    if t.ndim != 3:
        raise error(f"{what} must be (B, n, n), (B, 1, n, n) or (n, n), got {tuple(t.shape)}")
    return t
