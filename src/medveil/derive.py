"""Versioned derivation of the keyed matrices from a 256-bit secret.

Scheme ``medveil-derive-v1`` (the only one so far):

1. ``seed = SHA-256(b"medveil/derive/v1/" + label + b"/" + K)`` for a label such as
   ``b"left"`` or ``b"right"`` and the 32-byte secret ``K``.
2. A Philox-4x64-10 counter-based generator is keyed with the first 16 bytes of ``seed``
   (two little-endian 64-bit words) and the counter starts at 0.
3. Its raw 64-bit outputs become doubles in (0, 1) as ``((w >> 11) + 0.5) * 2**-53`` and pairs
   of them become standard normals by the Box-Muller transform
   ``z0 = sqrt(-2 ln u0) cos(2 pi u1)``, ``z1 = sqrt(-2 ln u0) sin(2 pi u1)``.

Only the Philox block function (a fixed algorithm) and IEEE arithmetic are involved, so the
numbers do not depend on NumPy's higher-level sampling code and a key file alone reproduces the
matrices on any machine.
"""

from __future__ import annotations

import hashlib

import numpy as np

DERIVATION = "medveil-derive-v1"


def _philox(secret: bytes, label: str) -> np.random.Philox:
    if len(secret) != 32:
        raise ValueError(f"secret must be 32 bytes (256 bits), got {len(secret)}")
    digest = hashlib.sha256(b"medveil/derive/v1/" + label.encode() + b"/" + secret).digest()
    words = np.frombuffer(digest[:16], dtype="<u8").astype(np.uint64)
    return np.random.Philox(key=words, counter=0)


def keyed_normals(secret: bytes, label: str, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float64 array of ``shape`` derived from ``(secret, label)``."""
    count = int(np.prod(shape))
    pairs = (count + 1) // 2
    raw = _philox(secret, label).random_raw(2 * pairs).astype(np.uint64)
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    u0, u1 = u[0::2], u[1::2]
    radius = np.sqrt(-2.0 * np.log(u0))
    angle = 2.0 * np.pi * u1
    normals = np.empty(2 * pairs, dtype=np.float64)
    normals[0::2] = radius * np.cos(angle)
    normals[1::2] = radius * np.sin(angle)
    return normals[:count].reshape(shape)


def keyed_orthogonal(secret: bytes, label: str, n: int) -> np.ndarray:
    """Haar-distributed random orthogonal ``n x n`` matrix derived from ``(secret, label)``.

    ``Q R = G`` for a keyed Gaussian ``G``; ``Q diag(sign(diag R))`` is Haar distributed
    (Mezzadri, "How to generate random matrices from the classical compact groups", 2007).
    """
    gaussian = keyed_normals(secret, label, (n, n))
    q, r = np.linalg.qr(gaussian)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs


def keyed_gaussian(secret: bytes, label: str, rows: int, cols: int) -> np.ndarray:
    """Gaussian ``rows x cols`` matrix with entries N(0, 1/rows) derived from ``(secret, label)``."""
    return keyed_normals(secret, label, (rows, cols)) / np.sqrt(rows)


def keyed_block_orthogonal(secret: bytes, label: str, n: int, block: int) -> np.ndarray:
    """Block-diagonal ``n x n`` orthogonal matrix of independent Haar blocks of size ``block``.

    Block ``i`` is :func:`keyed_orthogonal` with label ``f"{label}/{i}"``; the last block is
    smaller when ``block`` does not divide ``n``. Mixing only rows within a block keeps the
    coarse spatial layout that convolutional models rely on.
    """
    out = np.zeros((n, n))
    for i, start in enumerate(range(0, n, block)):
        size = min(block, n - start)
        out[start : start + size, start : start + size] = keyed_orthogonal(
            secret, f"{label}/{i}", size
        )
    return out
