"""The deterministic transform that applies a :class:`~medveil.keys.Key` to images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medveil.errors import ConfigError, InvalidKeyError
from medveil.keys import Key, Preset
from medveil.shapes import image_batch
from medveil.stages import (
    NoiseSource,
    Truncation,
    add_noise,
    dequantize,
    perturb_spectrum,
    project,
    quantize,
    truncated_svd,
)

__all__ = ["Obfuscator", "StageOutputs"]


@dataclass(frozen=True)
class StageOutputs:
    """Every intermediate of one batch, ``(B, ...)`` tensors.

    ``codes`` is ``None`` without quantization. ``output`` is what leaves the custodian: the
    projection, standardised with the calibration constants.
    """

    image: torch.Tensor
    truncation: Truncation
    codes: torch.Tensor | None
    quantized: torch.Tensor
    noised: torch.Tensor
    output: torch.Tensor


class Obfuscator:
    """Apply a key's scheme to images: a deterministic transform given the key.

    ``Y = standardise(R_L (Q_b(U_k S_k) + eps) R_R)`` for the ``multistage`` preset and
    ``Y = U_k S_k`` for the ``svd`` preset (see ``METHOD.md``).

    Accepts a torch tensor ``(B, 1, n, n)``, ``(B, n, n)``, ``(1, n, n)`` or ``(n, n)``, or a NumPy
    array ``(B, n, n)`` or ``(n, n)``, floating point with values in [0, 1], on CPU or CUDA, and
    returns the same kind and layout with the last axis of length ``m``. Usable as a
    torchvision/MONAI-style transform on single images inside a ``DataLoader``.

    Parameters
    ----------
    key
        A calibrated key (``svd`` keys need no calibration).
    dtype
        ``torch.float32`` (default) or ``torch.float64`` for the computation.
    noise_seed
        Pins the Gaussian noise, for tests only. Without it the noise comes from a generator
        keyed with 128 bits of OS entropy, fresh in every process (:class:`NoiseSource`). Never
        publish outputs made with a pinned seed: whoever knows the seed can redraw the noise.

    Notes
    -----
    The noise is fresh on every call, so obfuscating the same image twice gives two different
    outputs whose average carries less noise (N copies: the noise's standard deviation divided
    by the square root of N). Hand each image to a recipient once.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from medveil import Obfuscator, calibrate, generate_key
    >>> images = np.random.default_rng(0).random((8, 32, 32), dtype=np.float32)
    >>> obfuscate = Obfuscator(calibrate(generate_key(size=32, rank=8), images))
    >>> out = obfuscate(images)
    >>> out.shape, abs(float(out.mean())) < 0.1, abs(float(out.std()) - 1) < 0.1  # standardised
    ((8, 32, 32), True, True)
    >>> obfuscate(images[0]).shape, obfuscate(torch.from_numpy(images)[:, None]).shape
    ((32, 32), torch.Size([8, 1, 32, 32]))
    >>> bool((obfuscate(images) != out).any())  # fresh noise on every call
    True

    The ``svd`` preset has no noise, so it is a fixed function of the image:

    >>> plain_svd = Obfuscator(generate_key(preset="svd", size=32, rank=8))
    >>> plain_svd(images).shape, np.array_equal(plain_svd(images), plain_svd(images))
    ((8, 32, 8), True)
    """

    def __init__(
        self, key: Key, *, dtype: torch.dtype = torch.float32, noise_seed: int | None = None
    ) -> None:
        if not key.is_calibrated:
            raise InvalidKeyError(
                "the key is not calibrated: call medveil.calibration.calibrate(key, images) "
                "(or `medveil keygen --calibrate DIR`) before obfuscating"
            )
        if dtype not in (torch.float32, torch.float64):
            raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.key = key
        self.params = key.params
        self.dtype = dtype
        self.noise = NoiseSource(seed=noise_seed)
        self._left64 = key.left_matrix()
        self._right64 = key.right_matrix()
        self._cache: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {}

    def __repr__(self) -> str:
        return f"Obfuscator(fingerprint={self.key.fingerprint!r}, params={self.params!r})"

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint

    def _matrices(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        name = f"{device}/{self.dtype}"
        if name not in self._cache:

            def move(m: np.ndarray | None) -> torch.Tensor | None:
                return None if m is None else torch.as_tensor(m, dtype=self.dtype, device=device)

            self._cache[name] = (move(self._left64), move(self._right64))
        return self._cache[name]

    def stages(
        self, images: torch.Tensor, *, on_stage: Callable[[str], None] | None = None
    ) -> StageOutputs:
        """Run every stage on a ``(B, n, n)`` tensor and keep the intermediates.

        ``on_stage(name)`` is called as each stage ends (``truncation``, ``quantization``,
        ``noise``, ``projection``), so that a caller can time the stages of the real code path.
        """
        done = on_stage or (lambda name: None)
        x = self._check(images)
        p = self.params
        trunc = truncated_svd(x, p.rank, solver=p.solver)
        z = trunc.factor
        if p.dp_epsilon is not None:
            z = perturb_spectrum(z, epsilon=p.dp_epsilon, source=self.noise)
        done("truncation")
        if p.preset is Preset.SVD:
            return StageOutputs(x, trunc, None, z, z, z)
        cal = self.key.calibration
        assert cal is not None
        codes = None
        quantized = z
        if p.bits is not None:
            codes = quantize(z, bits=p.bits, clip=cal.clip)
            quantized = dequantize(codes, bits=p.bits, clip=cal.clip, dtype=x.dtype)
            done("quantization")
        noised = add_noise(quantized, std=p.noise * cal.clip, source=self.noise)
        done("noise")
        left, right = self._matrices(x.device)
        output = project(noised, left=left, right=right, shift=cal.mean, scale=cal.std)
        done("projection")
        return StageOutputs(x, trunc, codes, quantized, noised, output)

    def obfuscate(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, n, n)`` tensor in [0, 1] to ``(B, n, m)`` obfuscated tensor."""
        return self.stages(images).output

    def __call__(self, images: Any) -> Any:
        """Obfuscate ``(n, n)``, ``(B, n, n)`` or ``(B, 1, n, n)`` images (tensor or NumPy array),
        returning the same kind and layout: ``(n, m)``, ``(B, n, m)`` or ``(B, 1, n, m)``."""
        if not isinstance(images, (np.ndarray, torch.Tensor)):
            raise TypeError(
                f"expected a torch.Tensor or numpy.ndarray, got {type(images).__name__}"
            )
        out = self.obfuscate(image_batch(images))
        if images.ndim == 2:
            out = out[0]
        elif images.ndim == 4:
            out = out[:, None]
        return out.cpu().numpy() if isinstance(images, np.ndarray) else out

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        n = self.params.size
        if images.ndim != 3 or tuple(images.shape[1:]) != (n, n):
            raise ValueError(
                f"images must have shape (B, {n}, {n}) for this key (size={n}), "
                f"got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point in [0, 1], got {images.dtype}")
        x = images.to(self.dtype)
        # One pass: NaN propagates through min/max, and infinities fall outside [0, 1].
        lo, hi = (float(v) for v in torch.aminmax(x))
        if not (lo == lo and hi == hi):
            raise ValueError("images contain NaN values")
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        return x
