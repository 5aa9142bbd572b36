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
``fitted``
    ``L``, ``R`` learned as for ``linear``, but started from a data-fitted unmixing
    (:func:`fit_stem`) instead of the resize: the principal axes of the row and column second
    moments of the standardised *training* arrays, from the obfuscated arrays alone (no key, no
    plaintext: what any trainer can compute),

    .. math::  L_0 = c_L \\, D_{d_L} U^T, \\qquad R_0 = c_R \\, V E_{d_R},

    where ``U`` (n x d_L) and ``V`` (m x d_R) hold the top eigenvectors of
    :math:`E[Y Y^T]` and :math:`E[Y^T Y]` (descending eigenvalue, largest entry positive),
    ``d = min(s, number of non-negligible eigenvalues)``, ``D_d``, ``E_d`` resize ``d`` axes to
    ``s`` (the identity when ``d = s``) and ``c_L = c_R`` make the output's mean square on the
    training arrays equal the resize's. On noise-free ``multistage`` arrays ``V`` spans the row
    space of ``R_R`` exactly (``E[Y^T Y]`` has rank k), and ``U`` is ``R_L`` applied to the
    principal axes of ``E[Ẑ R_R R_R^T Ẑ^T]``: the start undoes ``R_L`` up to the rotation onto
    those axes, which no fit without plaintext can remove. :func:`medveil.training.train.train`
    fits it on a fresh run only (a resumed or loaded run reads ``L``, ``R`` from its
    checkpoint). Not the default: on brain MRI (3 keys, docs/RESULTS.md) it is no more accurate
    than ``linear`` and its trained stem aligns more with the key.

A stem's matrices are part of the model's state dict, so a saved run carries them. A learned stem
that has absorbed part of the key is also a measurement of how much of the key a trainer learns
from labelled obfuscated data (:func:`stem_alignment`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medveil.errors import LoadError

__all__ = [
    "STEMS",
    "StemFit",
    "StemSpec",
    "TwoSidedStem",
    "create_stem",
    "default_stem",
    "fit_stem",
    "get_stem_spec",
    "resize_matrix",
    "stem_alignment",
]


@dataclass(frozen=True, kw_only=True)
class StemSpec:
    """One registered stem: its name, whether it learns, whether its start is fitted on the
    training arrays (:func:`fit_stem`), and a one-line description."""

    name: str
    learnable: bool
    fitted: bool = False
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
        StemSpec(
            name="fitted", learnable=True, fitted=True,
            summary="learned two-sided linear map L·Y·R, started from the principal axes of the "
            "training arrays' rows and columns",
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


# Eigenvalues below this fraction of the largest are treated as zero: an axis that carries
# amplitude 3e-4 of the main one holds only the rounding of the stored arrays, not a direction
# of the data. In a synthetic check, rank-32 arrays of side 224 stored as float16 left their null
# axes' eigenvalues near 4e-9 of the largest (float32: 5e-15); their 32 data axes sat above 1e-3.
_AXIS_RTOL = 1e-7


@dataclass(frozen=True, kw_only=True)
class StemFit:
    """What :func:`fit_stem` found: the number of principal axes used on each side (``d_L``,
    ``d_R``), the number of arrays it read, the resize stem's output mean square on them, and
    the factor ``c_L c_R`` by which the unscaled axes' output was multiplied to match it."""

    left_axes: int
    right_axes: int
    count: int
    resize_mean_square: float
    scale: float


def _principal_axes(moment: torch.Tensor, *, most: int) -> torch.Tensor:
    """The ``(dim, d)`` top eigenvectors of a symmetric ``moment`` as columns, descending.

    ``d`` is ``most`` or the number of non-negligible eigenvalues, whichever is smaller: an axis
    with a zero eigenvalue reads nothing of the data (on ``multistage`` arrays ``E[Y^T Y]`` has
    rank k), and its eigenvector is an arbitrary basis vector of the null space. Each vector's
    sign makes its largest-magnitude entry positive (the first such entry on a tie), so that
    two fits of the same data give the same matrices.
    """
    values, vectors = torch.linalg.eigh(moment)
    values, vectors = values.flip(0), vectors.flip(1)
    if not values[0] > 0:
        raise LoadError("the training arrays are all zero: no axes to fit a stem on")
    d = max(1, min(most, int((values > values[0] * _AXIS_RTOL).sum())))
    axes = vectors[:, :d]
    peaks = axes.abs().argmax(dim=0)
    return axes * torch.sign(axes[peaks, torch.arange(d, device=axes.device)])


def _read(x: torch.Tensor, in_shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != in_shape:
        raise ValueError(
            f"fitting a stem reads (B, 1, {in_shape[0]}, {in_shape[1]}) arrays, got "
            f"{tuple(x.shape)}"
        )
    return x[:, 0].to(device=device, dtype=torch.float64)


def fit_stem(
    stem: TwoSidedStem,
    batches: Callable[[], Iterable[torch.Tensor]],
    *,
    total: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> StemFit:
    """Set ``stem``'s matrices to the data-fitted unmixing of the arrays ``batches`` yields.

    The ``fitted`` stem's start (see the module notes): ``L0 = c D_{d_L} U^T`` and
    ``R0 = c V E_{d_R}`` from the principal axes of the row and column second moments, scaled
    so that the output's mean square on these arrays equals the resize stem's. Give it the
    standardised *training* arrays only: whatever it reads shapes the start.

    Where a side has fewer than ``s`` usable axes (the ``svd`` preset's n x k factor with
    ``k < s``; the ``m - k`` null axes of ``multistage``'s ``E[Y^T Y]``), the ``d`` fitted axes
    are stretched over the ``s`` outputs by the resize ``D_d`` / ``E_d``, the way the resize stem
    stretches the factor's k columns: every output row and column reads data (none is zero or a
    copy of a null axis), and when ``d = s`` the resize is the identity.

    Parameters
    ----------
    stem : TwoSidedStem
        The stem to set (its shape decides ``n``, ``m`` and ``s``); changed in place.
    batches : callable
        Returns an iterable of ``(B, 1, n, m)`` arrays; called twice (the moments, then the
        scale), so it must yield the same arrays each time. Memory stays at one batch and the
        ``n x n`` and ``m x m`` sums.
    total : callable, optional
        Sums a float64 tensor over the processes of a distributed run (every process passes
        its own part of the arrays and ends with the same start); ``None`` when alone.
    device : torch.device or str, default "cpu"
        Where the float64 sums and ``eigh`` run.

    Returns
    -------
    StemFit
        The axes used on each side and the mean squares.

    Raises
    ------
    LoadError
        No arrays, or arrays that are all zero.
    ValueError
        Arrays of another shape than the stem reads.

    Examples
    --------
    On rank-2 arrays whose columns lie in a 2-d subspace, the right start has 2 axes and is
    stretched to the 4 outputs:

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.randn(50, 1, 8, 2, generator=g) @ torch.randn(2, 6, generator=g)
    >>> stem = create_stem("fitted", in_shape=(8, 6), size=4)
    >>> fit = fit_stem(stem, lambda: y.split(16))
    >>> fit.left_axes, fit.right_axes, fit.count
    (4, 2, 50)
    >>> resize = create_stem("resize", in_shape=(8, 6), size=4)
    >>> with torch.no_grad():
    ...     ratio = stem(y).square().mean() / resize(y).square().mean()
    >>> round(float(ratio), 5)
    1.0
    """
    n, m = stem.in_shape
    s = stem.size
    device = torch.device(device)
    add = total if total is not None else (lambda t: t)
    rows = torch.zeros(n, n, dtype=torch.float64, device=device)
    cols = torch.zeros(m, m, dtype=torch.float64, device=device)
    count = 0
    for x in batches():
        y = _read(x, stem.in_shape, device)
        across = y.transpose(0, 1).reshape(n, -1)  # the batch's rows side by side: n x (B m)
        rows += across @ across.T
        stacked = y.reshape(-1, m)  # the batch's rows stacked: (B n) x m
        cols += stacked.T @ stacked
        count += len(y)
    sums = add(torch.cat([rows.flatten(), cols.flatten(), rows.new_tensor([count])]))
    count = int(round(float(sums[-1])))
    if count == 0:
        raise LoadError("no training arrays to fit the stem on")
    rows, cols = sums[: n * n].view(n, n) / count, sums[n * n : -1].view(m, m) / count
    left_axes = _principal_axes(rows, most=s)  # n x d_L
    right_axes = _principal_axes(cols, most=s)  # m x d_R
    d_left, d_right = left_axes.shape[1], right_axes.shape[1]
    left = resize_matrix(d_left, s).to(rows) @ left_axes.T
    right = right_axes @ resize_matrix(d_right, s).to(cols).T

    resize_left = resize_matrix(n, s).to(rows)
    resize_right = resize_matrix(m, s).to(cols).T
    squares = torch.zeros(2, dtype=torch.float64, device=device)
    for x in batches():
        y = _read(x, stem.in_shape, device)
        squares[0] += (left @ y @ right).square().sum()
        squares[1] += (resize_left @ y @ resize_right).square().sum()
    fitted_ms, resize_ms = (float(v) for v in add(squares) / (count * s * s))
    if not (fitted_ms > 0 and resize_ms > 0):
        raise LoadError("the training arrays are all zero: no axes to fit a stem on")
    # The same factor on both sides keeps L and R at comparable norms, as the resize's are, so
    # that neither side's learning rate is effectively scaled against the other's.
    side = (resize_ms / fitted_ms) ** 0.25
    with torch.no_grad():
        stem.left.copy_(left * side)
        stem.right.copy_(right * side)
    return StemFit(
        left_axes=d_left, right_axes=d_right, count=count, resize_mean_square=resize_ms,
        scale=side * side,
    )


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
