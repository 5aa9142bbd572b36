"""Input stems: the first, linear stage of a classifier, between the data's arrays and the backbone.

A backbone (a CNN) expects a square picture whose neighbouring rows and columns belong together.
An obfuscated array is not one: the ``svd`` preset's ``Z = U_k S_k`` is ``n x k`` (k weighted
column profiles), and the ``multistage`` preset's ``Y = R_L Ẑ R_R`` has every row mixed with every
other by the keyed ``R_L`` and the k columns spread over m by ``R_R``. A stem maps the
standardised ``(B, 1, n, m)`` array to the backbone's ``(B, 1, s, s)`` input with a two-sided
linear map

.. math::  S(Y) = L \\, Y \\, R, \\qquad L \\in \\mathbb{R}^{s \\times n},\\; R \\in \\mathbb{R}^{m \\times s}

Stems (registry :data:`STEMS`):

``resize``
    ``L``, ``R`` fixed to antialiased bilinear resizing (exactly what resizing the array as an
    image did before stems existed). The plaintext default.
``linear``
    ``L``, ``R`` learned with the backbone, starting from the resize. Because the key is a
    two-sided linear map, ``L = D R_L^T`` and ``R = R_R^+ E`` (``D``, ``E`` resizes) turn ``Y``
    into the resized factor, so the stem can absorb the key's projection, and with it learn how to
    read a k-column factor better than a fixed stretch. The default for obfuscated data.

A stem's matrices are part of the model's state dict, so a saved run carries them. A learned stem
that has absorbed part of the key is also a measurement of how much of the key a trainer learns
from labelled obfuscated data (:func:`stem_alignment`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "STEMS",
    "StemSpec",
    "TwoSidedStem",
    "create_stem",
    "default_stem",
    "get_stem_spec",
    "resize_matrix",
    "stem_alignment",
]


@dataclass(frozen=True, kw_only=True)
class StemSpec:
    """One registered stem: its name, whether it learns, and a one-line description."""

    name: str
    learnable: bool
    summary: str


STEMS: dict[str, StemSpec] = {
    spec.name: spec
    for spec in (
        StemSpec(
            name="resize", learnable=False,
            summary="fixed antialiased bilinear resize of the array to the model's input",
        ),
        StemSpec(
            name="linear", learnable=True,
            summary="learned two-sided linear map L·Y·R, started as the resize",
        ),
    )
}


def get_stem_spec(name: str) -> StemSpec:
    """The :class:`StemSpec` of ``name``; a ``ValueError`` lists the valid names."""
    try:
        return STEMS[name]
    except KeyError:
        raise ValueError(f"unknown stem {name!r}; choose one of {', '.join(STEMS)}") from None


def default_stem(kind: str) -> str:
    """``linear`` for obfuscated data, ``resize`` for plaintext images."""
    return "linear" if kind == "obfuscated" else "resize"


def resize_matrix(source: int, target: int) -> torch.Tensor:
    """The ``(target, source)`` matrix of antialiased bilinear resizing along one axis.

    PyTorch's antialiased bilinear interpolation is separable, so resizing an ``(h, w)`` array to
    ``(s, t)`` equals ``resize_matrix(h, s) @ x @ resize_matrix(w, t).T`` (to rounding).

    Examples
    --------
    >>> import torch, torch.nn.functional as F
    >>> x = torch.rand(1, 1, 12, 5, dtype=torch.float64)
    >>> ref = F.interpolate(x, size=(4, 8), mode="bilinear", antialias=True, align_corners=False)
    >>> out = resize_matrix(12, 4).double() @ x @ resize_matrix(5, 8).double().T
    >>> bool(torch.allclose(out, ref))
    True
    """
    if source < 1 or target < 1:
        raise ValueError(f"sizes must be positive, got {source} -> {target}")
    eye = torch.eye(source, dtype=torch.float64)[None, None]
    rows = F.interpolate(
        eye, size=(target, source), mode="bilinear", antialias=True, align_corners=False
    )
    return rows[0, 0].to(torch.float32)


class TwoSidedStem(nn.Module):
    """``(B, 1, n, m) -> (B, 1, s, s)``: ``left @ x @ right``, fixed or learned.

    Parameters
    ----------
    in_shape : (int, int)
        ``(n, m)``, the shape of the arrays the stem reads.
    size : int
        ``s``, the side of the backbone's input.
    learnable : bool
        Learn ``left`` and ``right`` (parameters) or keep them fixed (buffers).
    """

    def __init__(self, *, in_shape: tuple[int, int], size: int, learnable: bool) -> None:
        super().__init__()
        n, m = in_shape
        self.in_shape = (int(n), int(m))
        self.size = int(size)
        left, right = resize_matrix(n, size), resize_matrix(m, size).T.contiguous()
        if learnable:
            self.left = nn.Parameter(left)
            self.right = nn.Parameter(right)
        else:
            self.register_buffer("left", left)
            self.register_buffer("right", right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != self.in_shape:
            raise ValueError(
                f"the stem reads (B, 1, {self.in_shape[0]}, {self.in_shape[1]}) arrays, got "
                f"{tuple(x.shape)}"
            )
        return self.left @ x @ self.right

    def extra_repr(self) -> str:
        learned = isinstance(self.left, nn.Parameter)
        return f"in_shape={self.in_shape}, size={self.size}, learnable={learned}"


def create_stem(name: str, *, in_shape: tuple[int, int], size: int) -> TwoSidedStem:
    """Build the stem ``name`` for arrays of ``in_shape`` and a backbone input of ``size``."""
    spec = get_stem_spec(name)
    return TwoSidedStem(in_shape=in_shape, size=size, learnable=spec.learnable)


def stem_alignment(
    stem: TwoSidedStem, *, left: np.ndarray | None, right: np.ndarray | None
) -> dict[str, float]:
    """How much of the key's projection a stem has absorbed (a trainer-side key-recovery measure).

    The exact unmixing maps ``Y`` to the resized factor: ``L* = D R_L^T`` and ``R* = R_R^+ E``
    (``D``, ``E`` the resizes). Each side's score is the fraction of the stem's matrix (Frobenius
    norm) that lies in the span of the exact unmixing:

    .. math::  a_L = \\lVert L Q_L \\rVert_F / \\lVert L \\rVert_F, \\quad
               Q_L = \\operatorname{orth}(R_L D^T) \\in \\mathbb{R}^{n \\times s}

    .. math::  a_R = \\lVert Q_R^T R \\rVert_F / \\lVert R \\rVert_F, \\quad
               Q_R = \\operatorname{orth}(R_R^T) \\in \\mathbb{R}^{m \\times k}

    1 means the stem reads only what the exact unmixing reads; a stem unrelated to the key scores
    about ``sqrt(s / n)`` on the left and ``sqrt(k / m)`` on the right.

    Parameters
    ----------
    stem : TwoSidedStem
        A trained (or untrained) stem.
    left, right : ndarray or None
        The key's ``R_L`` (n x n) and ``R_R`` (k x m), or ``None`` for a side it does not project.

    Returns
    -------
    dict
        ``left`` and ``right`` scores in [0, 1] (``nan`` for a side the key does not project) and
        the same scores for the plain resize (``left_resize``, ``right_resize``): what a stem
        that learned nothing about the key keeps.
    """
    out: dict[str, float] = {}
    n, m = stem.in_shape
    resize_left = resize_matrix(n, stem.size).double().numpy()
    resize_right = resize_matrix(m, stem.size).T.double().numpy()
    stem_left = stem.left.detach().double().cpu().numpy()
    stem_right = stem.right.detach().double().cpu().numpy()
    for side, learned, plain, matrix in (
        ("left", stem_left, resize_left, left),
        ("right", stem_right, resize_right, right),
    ):
        if matrix is None:
            out[side] = out[f"{side}_resize"] = float("nan")
            continue
        matrix = np.asarray(matrix, np.float64)
        if side == "left":
            # Rows of L* = D R_L^T span the row space of D R_L^T: an orthonormal basis of it.
            basis = np.linalg.qr((resize_left @ matrix.T).T)[0]  # n x s
            score = lambda a, b=basis: float(
                np.linalg.norm(a @ b) / max(np.linalg.norm(a), 1e-300)
            )
        else:
            # Columns of R* = R_R^+ E lie in the row space of R_R (k-dimensional in R^m).
            basis = np.linalg.qr(matrix.T)[0]  # m x k
            score = lambda a, b=basis: float(
                np.linalg.norm(b.T @ a) / max(np.linalg.norm(a), 1e-300)
            )
        out[side] = score(learned)
        out[f"{side}_resize"] = score(plain)
    return out
