"""What makes a training run repeatable: deterministic kernels, seeded per-epoch generators, and
the global RNG state that a checkpoint carries across a resumption.

Shuffling and augmentation draw from a generator seeded by ``(seed, epoch)``, so a resumed run
draws what an uninterrupted one would; dropout draws from the global torch RNG, whose state is
saved with every checkpoint and restored from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["deterministic", "epoch_generator", "rng_state", "set_rng_state"]


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels while training; the caller's global settings are restored after."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    # warn_only: a few CUDA kernels (e.g. adaptive pooling backward) have no deterministic
    # version; they warn instead of failing, and CPU training stays bit-exact.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[2:]


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """The generator that shuffles and augments ``epoch`` of the run seeded by ``seed``.

    Examples
    --------
    The same epoch of the same run draws the same numbers, a resumed run included:

    >>> a = epoch_generator(0, 3)
    >>> b = epoch_generator(0, 3)
    >>> bool(torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b)))
    True
    """
    # Process 0 (and a run alone) draws what it always drew; the others draw their own.
    entropy = [seed, epoch, 0xE90C] + ([rank] if rank else [])
    draw = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(draw))


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global torch RNG state (and the device's, on CUDA), for a checkpoint."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
