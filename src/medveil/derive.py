"""Versioned derivation of the keyed matrices from a 256-bit secret.

Both schemes turn a stream of 64-bit words into doubles in (0, 1) as
``((w >> 11) + 0.5) * 2**-53`` and pairs of those into standard normals by the Box-Muller
transform ``z0 = sqrt(-2 ln u0) cos(2 pi u1)``, ``z1 = sqrt(-2 ln u0) sin(2 pi u1)``. They differ
in where the words come from.

``medveil-derive-v2`` (keys drawn by this version):

    The words are the output of ``SHAKE-256(b"medveil/derive/v2/" + label + b"/" + K)`` read as
    little-endian 64-bit integers, where ``K`` is the whole 32-byte secret. SHAKE-256 keyed this
    way is a pseudorandom function of all 256 bits of ``K`` (no length extension on a sponge),
    and its output reveals nothing about ``K`` or about the rest of the stream. The labels bind
    the scheme's shape (:func:`bound_label`), so keys of different ``n``, ``k``, ``m`` or block
    size share no matrix entries.

``medveil-derive-v1`` (older keys; still read, so their transforms never change):

    ``seed = SHA-256(b"medveil/derive/v1/" + label + b"/" + K)``; a Philox-4x64-10 generator is
    keyed with the first 16 bytes of ``seed`` (two little-endian 64-bit words), counter 0, and
    its raw outputs are the words. Each matrix is thus one of at most 2**128, Philox is not a
    cryptographic function, and the labels are bare ``left``/``right``: ``R_L`` is the same at
    every rank and ``R_R`` at rank 4 is a rescaled slice of ``R_R`` at rank 8.

Only SHA-2/SHA-3 (or the Philox block function) and IEEE arithmetic are involved, so a key file
alone reproduces the matrices on any machine.
"""

from __future__ import annotations

import hashlib

import numpy as np

from medveil.errors import InvalidKeyError

__all__ = [
    "DERIVATION",
    "DERIVATIONS",
    "DERIVATION_V1",
    "DERIVATION_V2",
    "bound_label",
    "keyed_block_orthogonal",
    "keyed_gaussian",
    "keyed_normals",
    "keyed_orthogonal",
]

DERIVATION_V1 = "medveil-derive-v1"
DERIVATION_V2 = "medveil-derive-v2"
DERIVATIONS = (DERIVATION_V1, DERIVATION_V2)
DERIVATION = DERIVATION_V2  # what new keys use


def bound_label(name: str, *, size: int, rank: int, width: int, block_size: int) -> str:
    """A v2 label that binds the scheme's shape: ``f"{name}/n={n}/k={k}/m={m}/block={b}"``.

    Every keyed matrix of a v2 key carries all four numbers, so changing any of them (for
    example the rank in a sweep) gives matrices independent of the old ones.
    """
    return f"{name}/n={size}/k={rank}/m={width}/block={block_size}"


def _check(secret: bytes, derivation: str) -> None:
    if len(secret) != 32:
        raise InvalidKeyError(f"secret must be 32 bytes (256 bits), got {len(secret)}")
    if derivation not in DERIVATIONS:
        raise InvalidKeyError(f"unknown derivation {derivation!r}; known: {', '.join(DERIVATIONS)}")


def _words(secret: bytes, label: str, count: int, derivation: str) -> np.ndarray:
    """``count`` keyed 64-bit words (uint64) of ``(secret, label)`` under ``derivation``."""
    _check(secret, derivation)
    if derivation == DERIVATION_V1:
        digest = hashlib.sha256(b"medveil/derive/v1/" + label.encode() + b"/" + secret).digest()
        words = np.frombuffer(digest[:16], dtype="<u8").astype(np.uint64)
        return np.random.Philox(key=words, counter=0).random_raw(count).astype(np.uint64)
    # The secret is last and of fixed length, so prefix + label + secret is unambiguous.
    stream = hashlib.shake_256(b"medveil/derive/v2/" + label.encode() + b"/" + secret)
    return np.frombuffer(stream.digest(8 * count), dtype="<u8").astype(np.uint64)


def keyed_normals(
    secret: bytes, label: str, shape: tuple[int, ...], *, derivation: str = DERIVATION_V1
) -> np.ndarray:
    """Standard normal float64 array of ``shape`` derived from ``(secret, label)``.

    ``derivation`` defaults to v1 so that callers written before v2 keep their numbers; keys
    pass their own derivation explicitly.
    """
    count = int(np.prod(shape))
    pairs = (count + 1) // 2
    raw = _words(secret, label, 2 * pairs, derivation)
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    u0, u1 = u[0::2], u[1::2]
    radius = np.sqrt(-2.0 * np.log(u0))
    angle = 2.0 * np.pi * u1
    normals = np.empty(2 * pairs, dtype=np.float64)
    normals[0::2] = radius * np.cos(angle)
    normals[1::2] = radius * np.sin(angle)
    return normals[:count].reshape(shape)


def keyed_orthogonal(
    secret: bytes, label: str, n: int, *, derivation: str = DERIVATION_V1
) -> np.ndarray:
    """Haar-distributed random orthogonal ``n x n`` matrix derived from ``(secret, label)``.

    ``Q R = G`` for a keyed Gaussian ``G``; ``Q diag(sign(diag R))`` is Haar distributed
    (Mezzadri, "How to generate random matrices from the classical compact groups", 2007).
    """
    gaussian = keyed_normals(secret, label, (n, n), derivation=derivation)
    q, r = np.linalg.qr(gaussian)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs


def keyed_gaussian(
    secret: bytes, label: str, rows: int, cols: int, *, derivation: str = DERIVATION_V1
) -> np.ndarray:
    """Gaussian ``rows x cols`` matrix with entries N(0, 1/rows) derived from ``(secret, label)``."""
    return keyed_normals(secret, label, (rows, cols), derivation=derivation) / np.sqrt(rows)


def keyed_block_orthogonal(
    secret: bytes,
    label: str,
    n: int,
    block: int,
    *,
    derivation: str = DERIVATION_V1,
    suffix: str = "",
) -> np.ndarray:
    """Block-diagonal ``n x n`` orthogonal matrix of independent Haar blocks of size ``block``.

    Block ``i`` is :func:`keyed_orthogonal` with label ``f"{label}/{i}{suffix}"``; the last block
    is smaller when ``block`` does not divide ``n``. Mixing only rows within a block keeps the
    coarse spatial layout that convolutional models rely on. v2 keys pass the shape binding of
    :func:`bound_label` as ``suffix``.
    """
    out = np.zeros((n, n))
    for i, start in enumerate(range(0, n, block)):
        size = min(block, n - start)
        out[start : start + size, start : start + size] = keyed_orthogonal(
            secret, f"{label}/{i}{suffix}", size, derivation=derivation
        )
    return out
