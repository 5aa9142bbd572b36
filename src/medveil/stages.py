"""The four stages of the scheme as batched torch functions.

Every function takes a batch ``(B, rows, cols)`` and works on CPU or CUDA in the input's dtype.
They are deterministic except :func:`add_noise`, whose randomness comes from a
:class:`NoiseSource`.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = [
    "NoiseSource",
    "Solver",
    "Truncation",
    "add_noise",
    "block_width",
    "dequantize",
    "perturb_spectrum",
    "project",
    "quantize",
    "truncated_svd",
]

# Fixed start block of the subspace iteration: the same for every image and every run, so the
# truncation is a deterministic function of the image alone (whatever the batch it is in).
_SUBSPACE_SEED = 20250901


class Solver(StrEnum):
    """How the rank-k truncation is computed.

    ``subspace``: block subspace iteration on the Gram matrix ``X^T X`` with a fixed start block,
    Cholesky-QR re-orthonormalisation and a final Rayleigh-Ritz step (Halko, Martinsson and Tropp,
    2011, Alg. 4.4). Several times faster than LAPACK's SVD at n = 224, k = 32; its speed and
    its accuracy against the exact SVD are measured in ``benchmarks/obfuscation_throughput.py``.
    ``exact``: ``torch.linalg.svd``.
    """

    SUBSPACE = "subspace"
    EXACT = "exact"


def _check_batch(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (B, rows, cols), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")


@dataclass(frozen=True)
class Truncation:
    """Result of :func:`truncated_svd`: ``X ~ factor @ basis.mT`` with ``factor = U_k S_k``."""

    factor: torch.Tensor  # (B, n, k) = U_k diag(s_k)
    singular_values: torch.Tensor  # (B, k), descending
    basis: torch.Tensor  # (B, n, k) = V_k, orthonormal columns

    def approximation(self) -> torch.Tensor:
        """The rank-k approximation ``U_k S_k V_k^T``."""
        return self.factor @ self.basis.mT


def _cholesky_qr(q: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """One shifted Cholesky-QR pass with the ``l x l`` algebra in ``dtype``.

    Returns the new block and, per batch element, whether the factorisation succeeded.
    """
    wide = q.to(dtype)
    gram = wide.mT @ wide
    eye = torch.eye(gram.shape[-1], dtype=dtype, device=q.device)
    scale = torch.diagonal(gram, dim1=-2, dim2=-1).clamp_min(torch.finfo(dtype).tiny ** 0.5).rsqrt()
    gram = gram * scale[..., :, None] * scale[..., None, :]
    gram = gram + (1e-5 if q.dtype == torch.float32 else 1e-12) * eye
    chol, info = torch.linalg.cholesky_ex(gram)
    inverse = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False).mT
    return q @ (inverse * scale[..., :, None]).to(q.dtype), info == 0


def _orthonormalise(q: torch.Tensor) -> torch.Tensor:
    """Shifted Cholesky-QR: the columns of ``q`` to an orthonormal basis of (nearly) their span.

    The Gram matrix is scaled to a unit diagonal and shifted by a small multiple of the
    identity, which keeps the Cholesky factorisation defined when the block is rank deficient
    (an image of rank below the block width); applied twice it is orthonormal to working
    precision (shifted CholeskyQR2, Fukaya et al. 2020). Everything but one batched product
    works on ``l x l`` matrices. The rare block whose float32 Gram is too ill-conditioned even
    for the shift (seen on a real ultrasound image) is redone with that algebra in float64, so
    the result still depends on the image alone.
    """
    out, ok = _cholesky_qr(q, q.dtype)
    if q.dtype != torch.float64 and not bool(ok.all()):
        redo = ~ok
        out = out.clone()
        out[redo] = _cholesky_qr(q[redo], torch.float64)[0]
    return out


def _start_block(n: int, width: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    gen = np.random.default_rng(_SUBSPACE_SEED)
    block = gen.standard_normal((n, width))
    return torch.as_tensor(block, dtype=dtype, device=device)


def block_width(rank: int, n: int) -> int:
    """Oversampled block width of the subspace iteration: ``min(n, k + max(k, 16))`` rounded
    up to a multiple of 4.

    The multiple of 4 makes every ``l x l`` matrix of a batch start on a 64-byte boundary, so
    MKL's small-matrix routines (whose rounding depends on alignment) give each image the same
    bits whatever batch it is in and wherever it sits in the batch.
    """
    return min(n, -(-(rank + max(rank, 16)) // 4) * 4)


def truncated_svd(
    x: torch.Tensor, rank: int, *, solver: Solver | str = Solver.SUBSPACE, iterations: int = 3
) -> Truncation:
    """Rank-``k`` truncated SVD of a batch with deterministic signs.

    For each image ``X = U S V^T`` the ``k`` largest singular triplets are kept and each pair
    ``(u_i, v_i)`` is flipped so that the entry of ``u_i`` largest in magnitude is positive.

    Parameters
    ----------
    x
        ``(B, n, n)`` (or ``(B, n, c)``) floating tensor.
    rank
        ``k``.
    solver
        :class:`Solver`.
    iterations
        Subspace iterations with ``X^T X`` (``subspace`` solver only).
    """
    _check_batch(x, "x")
    n_rows, n_cols = x.shape[-2:]
    if not 1 <= rank <= min(n_rows, n_cols):
        raise ValueError(f"rank must be in [1, {min(n_rows, n_cols)}], got {rank}")
    solver = Solver(solver)
    width = block_width(rank, n_cols)
    if solver is Solver.EXACT or width >= n_cols:
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        factor = u[..., :rank] * s[..., None, :rank]
        basis = vh[..., :rank, :].mT
        values = s[..., :rank]
    else:
        gram = x.mT @ x
        q = gram @ _start_block(n_cols, width, dtype=x.dtype, device=x.device)
        for _ in range(iterations - 1):
            q = gram @ _orthonormalise(q)
        q = _orthonormalise(_orthonormalise(q))
        xq = x @ q
        evals, evecs = torch.linalg.eigh(xq.mT @ xq)
        ritz = evecs[..., -rank:].flip(-1)
        basis = q @ ritz
        factor = xq @ ritz  # = x @ basis, from the n x l product already made
        values = evals[..., -rank:].flip(-1).clamp_min(0).sqrt()
    # Sign rule: the largest-magnitude entry of each u_i (equivalently of z_i = s_i u_i) > 0.
    idx = factor.abs().argmax(dim=-2, keepdim=True)
    signs = torch.sign(torch.gather(factor, -2, idx))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return Truncation(factor=factor * signs, singular_values=values, basis=basis * signs)


def quantize(z: torch.Tensor, *, bits: int, clip: float) -> torch.Tensor:
    """Uniform ``b``-bit codes of ``z`` over ``[-c, c]`` (values outside are clipped).

    ``q = round((clip(z, -c, c) + c) / (2c) * (2^b - 1))``, an integer tensor in ``[0, 2^b - 1]``.
    """
    levels = (1 << bits) - 1
    scaled = (z.clamp(-clip, clip) + clip) * (levels / (2.0 * clip))
    return scaled.round().to(torch.int32)


def dequantize(codes: torch.Tensor, *, bits: int, clip: float, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`quantize` up to the quantization error: ``q (2c) / (2^b - 1) - c``."""
    levels = (1 << bits) - 1
    return codes.to(dtype) * (2.0 * clip / levels) - clip


class NoiseSource:
    """Where stage 3's Gaussian noise comes from.

    By default a NumPy Philox-4x64 generator keyed with 128 bits from the operating system
    (:mod:`secrets`), drawn afresh in every process: the noise is never derived from the key and
    differs between runs, and guessing it means guessing 128 bits. ``seed`` pins it, for tests
    only (a pinned seed next to a published plaintext/output pair lets anyone reproduce the
    noise): noise is then drawn image by image, in order, from one Philox stream on the CPU in
    float64, so the result does not depend on batch size, dtype or device. A forked copy (a
    ``DataLoader`` worker) never continues its parent's stream: a fresh 128-bit key by default,
    or with a pinned seed the stream of ``(seed, worker id)``, so workers draw different noise
    and a rerun with the same seed and workers draws the same.
    """

    def __init__(self, *, seed: int | None = None) -> None:
        self._seed = seed
        self._creator = os.getpid()
        self._pid = -1
        self._generator: np.random.Generator | None = None

    @property
    def pinned(self) -> bool:
        return self._seed is not None

    def _bit_generator(self) -> np.random.BitGenerator:
        if self._seed is None:
            return np.random.Philox(key=secrets.randbits(128))
        info = get_worker_info()
        if info is None and os.getpid() == self._creator:
            return np.random.Philox(self._seed)
        # Spawn keys give independent child streams of the pinned seed (NumPy's SeedSequence);
        # worker ids are small, other forked copies are told apart by their process id.
        child = info.id if info is not None else (1 << 32) + os.getpid()
        return np.random.Philox(np.random.SeedSequence(self._seed, spawn_key=(child,)))

    def _stream(self) -> np.random.Generator:
        # The generator is stored before the process id that marks it current, so a second
        # thread never finds the mark without the generator (NumPy generators are thread-safe).
        generator = self._generator
        if self._pid != os.getpid() or generator is None:
            generator = np.random.Generator(self._bit_generator())
            self._generator = generator
            self._pid = os.getpid()
        return generator

    def normal(
        self, shape: tuple[int, ...], *, std: float, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        stream = self._stream()
        if self.pinned:
            draws = stream.standard_normal(size=shape)
            return torch.as_tensor(draws * std, dtype=dtype, device=device)
        draw_type = np.float32 if dtype == torch.float32 else np.float64
        draws = torch.from_numpy(stream.standard_normal(size=shape, dtype=draw_type))
        return draws.to(device=device, dtype=dtype).mul_(std)

    def laplace(
        self, shape: tuple[int, ...], *, scale: float, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """Laplace draws of ``scale`` from the same stream (DP-SVD's spectrum noise)."""
        draws = self._stream().laplace(scale=scale, size=shape)
        return torch.as_tensor(draws, dtype=dtype, device=device)


def perturb_spectrum(z: torch.Tensor, *, epsilon: float, source: NoiseSource) -> torch.Tensor:
    """DP-SVD (after Fan, ICME 2019): Laplace noise on the singular values of ``Z = U_k S_k``.

    .. math::  \\tilde\\sigma_i = \\max(0, \\sigma_i + L_i), \\quad
               L_i \\sim \\mathrm{Laplace}(\\sqrt{k} / \\epsilon), \\qquad
               \\tilde Z = U_k \\operatorname{diag}(\\tilde\\sigma)

    Mirsky's inequality gives ``||s(X) - s(X')||_2 <= ||X - X'||_F``, so the k singular values
    have L1 sensitivity ``sqrt(k) ||X - X'||_F`` and the noisy spectrum is
    ``epsilon``-metric-private under the Frobenius distance (clipping at 0 is post-processing).
    ``U_k`` is kept exactly: the guarantee covers the spectrum, which is what a keyless observer
    reads through the projections, and not the singular vectors.

    Examples
    --------
    >>> z = torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])
    >>> out = perturb_spectrum(z, epsilon=1e6, source=NoiseSource(seed=0))
    >>> bool(torch.allclose(out, z, atol=1e-4))
    True
    """
    _check_batch(z, "z")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    sigma = torch.linalg.vector_norm(z, dim=-2)  # (B, k): the columns of U_k S_k
    scale = math.sqrt(z.shape[-1]) / epsilon
    noise = source.laplace(tuple(sigma.shape), scale=scale, dtype=z.dtype, device=z.device)
    noisy = (sigma + noise).clamp_min_(0.0)
    # A zero column (a rank-deficient image) has no direction to scale: it stays zero.
    ratio = torch.where(sigma > 0, noisy / sigma.clamp_min(torch.finfo(z.dtype).tiny), 0.0)
    return z * ratio[..., None, :]


def add_noise(z: torch.Tensor, *, std: float, source: NoiseSource) -> torch.Tensor:
    """``z + eps`` with ``eps ~ N(0, std^2)`` i.i.d. per entry."""
    if std == 0:
        return z
    return z + source.normal(tuple(z.shape), std=std, dtype=z.dtype, device=z.device)


def project(
    z: torch.Tensor,
    *,
    left: torch.Tensor | None,
    right: torch.Tensor | None,
    shift: float = 0.0,
    scale: float = 1.0,
) -> torch.Tensor:
    """Keyed random projection ``Y = (R_L Z R_R - shift) / scale`` (a ``None`` side: identity).

    The standardisation is folded into the last product so the output is written once.
    """
    _check_batch(z, "z")
    if left is not None:
        z = left @ z
    if right is None:
        return z if shift == 0.0 and scale == 1.0 else (z - shift) / scale
    offset = torch.full((1, 1, 1), -shift / scale, dtype=z.dtype, device=z.device)
    return torch.baddbmm(offset, z, (right / scale).expand(len(z), *right.shape))
