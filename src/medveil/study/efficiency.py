"""Time each stage of the obfuscation on the real code path, per image."""

from __future__ import annotations

import time
from collections import defaultdict

import torch

from medveil.errors import ConfigError
from medveil.keys import Key
from medveil.obfuscator import Obfuscator

__all__ = ["stage_timings"]


def stage_timings(
    key: Key,
    images: torch.Tensor,
    *,
    batch_size: int = 64,
    repeats: int = 3,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Milliseconds per image of every stage, and of the whole transform, best of ``repeats``.

    The batches run through :meth:`Obfuscator.stages` with a clock at each stage boundary
    (synchronising CUDA first, so a stage is charged for its own kernels). Taking the best pass
    of each stage discards the passes a busy machine slowed down. The first batch is run once
    untimed: it pays for allocator and kernel warm-up that a long run does not.

    Returns
    -------
    dict
        ``{"truncation": ms, "quantization": ms, "noise": ms, "projection": ms, "total": ms}``
        (only the stages the key's preset has; ``total`` is the sum of the stage bests).
    """
    device = torch.device(device)
    obfuscator = Obfuscator(key)
    batches = [images[i : i + batch_size].to(device) for i in range(0, len(images), batch_size)]
    if not batches:
        raise ConfigError("stage_timings needs at least one image")
    obfuscator.stages(batches[0])

    clock = _StageClock(device)
    best: dict[str, float] = {}
    for _ in range(repeats):
        clock.spent.clear()
        for batch in batches:
            clock.start()
            obfuscator.stages(batch, on_stage=clock)
        for name, seconds in clock.spent.items():
            best[name] = min(best.get(name, float("inf")), seconds)
    per_image = {name: 1000.0 * seconds / len(images) for name, seconds in best.items()}
    per_image["total"] = sum(per_image.values())
    return per_image


class _StageClock:
    """Adds the time since the previous stage boundary to the stage that just ended."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.spent: dict[str, float] = defaultdict(float)
        self.last = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.spent[name] += now - self.last
        self.last = now
