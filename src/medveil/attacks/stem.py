"""The trainer's attack: read the victims through a classifier's learned input stem.

Threat model A1 as a trainer holds it: the obfuscated arrays, the scheme's parameters and public
images of the modality, plus the labelled obfuscated training data and therefore the trained
model, whose input stem (:class:`~medveil.training.stems.TwoSidedStem`) maps an array ``Y``
(``n x m``) to ``S(Y) = L Y R`` (``s x s``). Not the key, not known pairs.

A stem that has learned the exact unmixing ``L* = D R_L^T``, ``R* = R_R^+ E`` (``D`` the
``s x n`` resize, ``E`` the ``k x s`` resize) turns ``Y = (R_L Ẑ R_R - mu) / sigma`` into
``(D Ẑ E) / sigma`` minus a constant: the victim's resized factor. Whatever part of it the
trained stem holds (:func:`~medveil.training.stems.stem_alignment`) is what this attack can use.
It is not a registry attack: it needs a trained stem, which an
:class:`~medveil.attacks.context.AttackContext` does not carry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from medveil.attacks.base import make_pool
from medveil.attacks.context import (
    AttackContext,
    NotApplicableError,
    ThreatModel,
    Victims,
    content_ids,
)
from medveil.attacks.recovery import factors, public_basis
from medveil.keys import LeftProjection, Preset, RightProjection, SchemeParams
from medveil.metrics import ssim
from medveil.training.stems import TwoSidedStem, resize_matrix, stem_alignment

__all__ = ["StemAttackResult", "StemView", "exact_unmixing", "in_span", "stem_attack"]


@dataclass(frozen=True, kw_only=True)
class StemView:
    """Scores of one reading of the victims, ``S(Y) = L Y R``.

    Attributes
    ----------
    lookalike_ssim : dict
        ``{m: mean SSIM}`` of the mean of the ``m`` public images nearest to each victim.
    reid_top1 : float
        Fraction of victims matched to their own original in the pool under a one-to-one
        assignment (the suite's convention, :class:`~medveil.attacks.base.MatchingAttack`).
    reid_top1_nearest, reid_top5 : float
        Fraction whose original is the nearest candidate, among the 5 nearest.
    reconstruction_ssim : float
        Mean SSIM of the best reconstruction variant (``variants`` has them all).
    variants : dict
        Mean SSIM of each reconstruction: ``pb``: ``Ẑ_est V̂^T``; ``pb+mean``: the same plus the
        mean public image's share outside ``V̂``'s span (as
        :class:`~medveil.attacks.public_basis.PublicBasisAttack`); ``ridge``: a linear decoder
        from the stem's features to the image fitted on the public images (kernel ridge, its
        strength chosen by leave-one-out on them).
    """

    lookalike_ssim: dict[int, float]
    reid_top1: float
    reid_top1_nearest: float
    reid_top5: float
    reconstruction_ssim: float
    variants: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StemAttackResult:
    """The stem attack's scores beside the yardstick.

    Attributes
    ----------
    yardstick_ssim : float
        Mean SSIM of the mean public image to each victim: a reconstruction that does not beat
        it has learned nothing about the victim.
    realistic : StemView
        Through the stem's own ``L``, ``R`` (A1, what the trainer holds).
    bound : StemView or None
        Through the best approximations of ``L*``, ``R*`` within the stem's spans
        (:func:`in_span`); needs the key's matrices, so it is an upper bound on any in-span use
        of the stem, not an A1 attack. ``None`` when they were not given.
    alignment : dict
        :func:`~medveil.training.stems.stem_alignment` (empty without the key's matrices).
    pool_size : int
        Candidates in the re-identification pool (victims' originals and public images).
    """

    yardstick_ssim: float
    realistic: StemView
    bound: StemView | None
    alignment: dict[str, float]
    pool_size: int

    @property
    def chance_top1(self) -> float:
        """Re-identification top-1 of a random guess, ``1 / pool_size``."""
        return 1.0 / self.pool_size


def _resizes(n: int, k: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``D`` (``s x n``) and ``E`` (``k x s``) in float64."""
    return (
        resize_matrix(n, size).double().numpy(),
        resize_matrix(k, size).T.double().numpy(),
    )


def exact_unmixing(
    *, n: int, k: int, size: int, left: np.ndarray | None, right: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The stem ``(L*, R*)`` that turns an obfuscated array into the resized factor.

    .. math::  L^* = D R_L^T, \\qquad R^* = R_R^+ E

    with ``D`` the ``s x n`` and ``E`` the ``k x s`` resizes (a ``None`` side of the key is the
    identity, so ``L* = D`` or ``R* = E``; for ``svd`` both). Then
    ``L* (R_L Ẑ R_R) R* = D Ẑ E`` because ``R_L`` is orthogonal and ``R_R R_R^+ = I_k``.

    Examples
    --------
    >>> import numpy as np
    >>> q = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]
    >>> g = np.random.default_rng(1).normal(size=(2, 5))
    >>> z = np.random.default_rng(2).normal(size=(6, 2))
    >>> ls, rs = exact_unmixing(n=6, k=2, size=4, left=q, right=g)
    >>> d, e = exact_unmixing(n=6, k=2, size=4, left=None, right=None)
    >>> bool(np.allclose(ls @ (q @ z @ g) @ rs, d @ z @ e))
    True
    """
    d, e = _resizes(n, k, size)
    if left is not None:
        left = np.asarray(left, np.float64)
        if left.shape != (n, n):
            raise NotApplicableError(f"R_L must be {n} x {n}, got {left.shape[0]} x {left.shape[1]}")
        d = d @ left.T
    if right is not None:
        right = np.asarray(right, np.float64)
        if right.shape[0] != k:
            raise NotApplicableError(f"R_R must have k = {k} rows, got {right.shape[0]}")
        e = np.linalg.pinv(right) @ e
    return d, e


def in_span(
    left: np.ndarray, right: np.ndarray, *, target_left: np.ndarray, target_right: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The best approximations of a target stem within a stem's row and column spaces.

    .. math::  L_o = L^* L^T (L L^T)^+ L = L^* L^+ L, \\qquad
               R_o = R (R^T R)^+ R^T R^* = R R^+ R^*

    Each row of ``L_o`` is the orthogonal projection of the same row of ``L*`` onto the row space
    of ``L`` (what ``L`` can read of ``Y``'s columns), each column of ``R_o`` that of ``R*``'s onto
    the column space of ``R``. A stem whose spans hold ``L*``, ``R*`` gives them back exactly.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> target_l, target_r = rng.normal(size=(3, 8)), rng.normal(size=(8, 3))
    >>> mix = rng.normal(size=(3, 3))
    >>> lo, ro = in_span(mix @ target_l, target_r @ mix, target_left=target_l,
    ...                  target_right=target_r)
    >>> bool(np.allclose(lo, target_l) and np.allclose(ro, target_r))
    True
    """
    left, right = np.asarray(left, np.float64), np.asarray(right, np.float64)
    return (
        target_left @ np.linalg.pinv(left) @ left,
        right @ np.linalg.pinv(right) @ target_right,
    )


def _read(left: np.ndarray, right: np.ndarray, arrays: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """``L Y R`` of every array, in float64, ``chunk`` arrays at a time."""
    lt, rt = torch.from_numpy(left), torch.from_numpy(right)
    return torch.cat(
        [lt @ arrays[i : i + chunk].double() @ rt for i in range(0, len(arrays), chunk)]
    )


def _unit(features: torch.Tensor) -> torch.Tensor:
    """Centre over the set, flatten and scale each row to unit norm (a scale-free feature).

    Centring removes the constant that the output standardisation leaves behind
    (``mu / sigma`` times a fixed matrix), unit norm its scale ``1 / sigma``.
    """
    flat = (features - features.mean(dim=0)).flatten(1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _centred_gram(images: torch.Tensor) -> torch.Tensor:
    """``X_c X_c^T`` (float64) of the flattened images less their mean."""
    flat = images.flatten(1)
    centred = flat - flat.mean(dim=0)
    return (centred @ centred.T).double()


def _ridge_weights(
    reference: torch.Tensor, seen: torch.Tensor, gram: torch.Tensor
) -> torch.Tensor:
    """Kernel ridge weights ``w_v = f_v F^T (F F^T + a I)^{-1}`` of each victim on the public
    images, ``a`` chosen by leave-one-out on the public images.

    ``F`` (``P x d``) holds the public images' features, ``f_v`` the victim's; the decoded image
    is ``mean P + w_v X_c`` with ``X_c`` the centred public images. With
    ``F F^T = Q diag(e) Q^T`` the hat matrix is ``H = Q diag(e / (e + a)) Q^T`` and the
    leave-one-out residual of image ``i`` is ``((I - H) X_c)_i / (1 - H_ii)``, whose squared
    norm needs only ``gram = X_c X_c^T``: ``(A Q^T gram Q A^T)_ii`` with ``A = Q diag(a / (e + a))``.
    """
    evals, q = torch.linalg.eigh(reference @ reference.mT)
    evals = evals.clamp_min(0.0)
    moment = q.mT @ gram @ q
    scale = float(evals.mean())
    best: tuple[float, float] | None = None
    # Half-decade steps: a coarser grid makes the choice jump between very different decoders.
    for alpha in (scale * 10.0 ** (p / 2) for p in range(-8, 4)):
        a = q * (alpha / (evals + alpha))
        hat = ((q * (evals / (evals + alpha))) * q).sum(dim=1)
        loo = float((((a @ moment) * a).sum(dim=1) / (1.0 - hat).clamp_min(1e-12) ** 2).mean())
        if best is None or loo < best[0]:
            best = (loo, alpha)
    assert best is not None
    alpha = best[1]
    return (seen @ reference.mT @ q) / (evals + alpha) @ q.mT


def _view(
    left: np.ndarray,
    right: np.ndarray,
    *,
    victims: Victims,
    context: AttackContext,
    public_factors: torch.Tensor,
    pool_factors: torch.Tensor,
    pool_truth: np.ndarray,
    basis: torch.Tensor,
    public_gram: torch.Tensor,
    size: int,
    neighbours: Sequence[int],
) -> StemView:
    p = context.params
    assert context.public is not None
    public = context.public
    chunk = 64  # victims at a time: m look-alikes of each are m full images
    d, e = _resizes(p.size, p.rank, size)
    dt, et = torch.from_numpy(d), torch.from_numpy(e)
    read = _read(left, right, victims.obfuscated)  # (B, s, s)
    seen = _unit(read)

    # Look-alikes: the public images whose exact-unmixing output F(P) = D Z_P E is nearest.
    reference = _unit(dt @ public_factors @ et)
    distance = 1.0 - seen @ reference.T
    lookalike = {}
    for m in neighbours:
        nearest = distance.topk(min(m, len(public)), largest=False).indices
        scores = [
            ssim(victims.originals[i : i + chunk], public[nearest[i : i + chunk]].mean(dim=1))
            for i in range(0, len(victims), chunk)
        ]
        lookalike[int(m)] = float(torch.cat(scores).mean())

    # Re-identification among the victims' originals hidden in the public images.
    pool_dist = (1.0 - seen @ _unit(dt @ pool_factors @ et).T).numpy()
    true_d = pool_dist[np.arange(len(victims)), pool_truth]
    rank = 1 + (pool_dist < true_d[:, None]).sum(axis=1)
    rows, cols = linear_sum_assignment(pool_dist)
    chosen = np.empty(len(victims), dtype=np.int64)
    chosen[rows] = cols

    # Reconstruction: Ẑ_est = Z̄ + a D^+ (S(Y) - mean S) E^+, with the scale a matching the
    # public factors' spread in the same (resized and back) space, then X = Ẑ_est V̂^T.
    d_pinv, e_pinv = torch.linalg.pinv(dt), torch.linalg.pinv(et)
    z_mean = public_factors.mean(dim=0)
    back = d_pinv @ (read - read.mean(dim=0)) @ e_pinv
    public_back = d_pinv @ dt @ (public_factors - z_mean) @ et @ e_pinv
    scale = public_back.flatten(1).norm(dim=1).mean() / back.flatten(1).norm(dim=1).mean().clamp_min(
        1e-300
    )
    estimate = (z_mean + scale * back) @ basis.mT
    mean_image = public.double().mean(dim=0)
    filler = mean_image - (mean_image @ basis) @ basis.mT
    variants = {
        "pb": float(ssim(victims.originals, estimate).mean()),
        "pb+mean": float(ssim(victims.originals, estimate + filler).mean()),
    }
    # A decoder the attacker fits on the public images, for which it knows both F(P) and P.
    weights = _ridge_weights(reference, seen, public_gram)
    centred = public.flatten(1) - mean_image.flatten().to(public.dtype)
    decoded = mean_image + (weights.to(public.dtype) @ centred).double().view(-1, *public.shape[1:])
    variants["ridge"] = float(ssim(victims.originals, decoded).mean())
    return StemView(
        lookalike_ssim=lookalike,
        reid_top1=float((chosen == pool_truth).mean()),
        reid_top1_nearest=float((rank == 1).mean()),
        reid_top5=float((rank <= 5).mean()),
        reconstruction_ssim=max(variants.values()),
        variants=variants,
    )


def stem_attack(
    stem: TwoSidedStem,
    *,
    victims_obfuscated: torch.Tensor | np.ndarray,
    victim_originals: torch.Tensor | np.ndarray,
    public: torch.Tensor | np.ndarray,
    params: SchemeParams,
    key_matrices: Mapping[str, np.ndarray] | None = None,
    neighbours: Sequence[int] = (1, 5),
    seed: int = 0,
) -> StemAttackResult:
    """Look-alikes, re-identification and a reconstruction through a trained input stem.

    With the victims' stem outputs ``S(Y_v) = L Y_v R`` and, for any plaintext image ``P``, the
    exact-unmixing output it would have, ``F(P) = D Z_P E`` (``Z_P = U_k S_k`` by the scheme's
    own truncated SVD and sign rule, :func:`~medveil.attacks.recovery.factors`), the attacker
    compares scale-free features: each set centred on its own mean and every flattened output
    scaled to unit norm (the output standardisation's ``mu``, ``sigma`` are the key's), distance
    ``1 - cos``.

    - **Look-alikes**: the mean of the ``m`` public images nearest to each victim, scored by SSIM.
    - **Re-identification**: the victims' originals hidden among the public images (the suite's
      pool, :func:`~medveil.attacks.base.make_pool`), top-1 under a one-to-one assignment.
    - **Reconstruction**: ``Ẑ_est = Z̄ + a D^+ (S(Y_v) - mean_v S(Y_v)) E^+`` with ``Z̄`` the mean
      public factor and ``a`` matching the mean norm of ``D^+ D (Z_P - Z̄) E E^+`` over the public
      images; the image is ``Ẑ_est V̂^T`` with ``V̂`` the public basis
      (:func:`~medveil.attacks.recovery.public_basis`), optionally plus the mean public image's
      share outside ``V̂``'s span; and a decoder fitted on the public images, for which the
      attacker knows both the feature ``F(P)`` and the image:
      ``X_v = P̄ + f_v F^T (F F^T + a I)^{-1} (X - P̄)`` (kernel ridge on the unit features,
      ``a`` by leave-one-out). The score is the best of the three.

    Two readings are scored: the stem's own ``L``, ``R`` (realistic, A1), and with the key's
    matrices the in-span bound ``L_o``, ``R_o`` (:func:`in_span` of :func:`exact_unmixing`).

    Parameters
    ----------
    stem : TwoSidedStem
        The trained stem; reads ``(n, m)`` arrays (the store's shape).
    victims_obfuscated : (B, n, m) tensor or array
        The victims' obfuscated arrays as stored.
    victim_originals : (B, n, n) tensor or array
        Their originals in [0, 1], for scoring and for hiding in the pool only.
    public : (P, n, n) tensor or array
        Public images of the modality, disjoint from the victims.
    params : SchemeParams
        The scheme's parameters (public).
    key_matrices : mapping or None
        ``{"left": R_L, "right": R_R}`` (a side the scheme does not project absent) for the
        bound and the alignment; ``None``: the realistic reading only. Not needed for ``svd``.
    neighbours : sequence of int
        The look-alike counts ``m``.
    seed : int
        Order of the re-identification pool.

    Returns
    -------
    StemAttackResult

    Raises
    ------
    NotApplicableError
        The stem does not read the scheme's output shape, or the key's matrices do not fit.
    DisjointnessError
        A victim's original is also a public image.
    """
    n, k = params.size, params.rank
    if stem.in_shape != params.out_shape:
        raise NotApplicableError(
            f"the stem reads {stem.in_shape[0]} x {stem.in_shape[1]} arrays, the scheme outputs "
            f"{params.out_shape[0]} x {params.out_shape[1]}"
        )
    originals = torch.as_tensor(np.asarray(victim_originals), dtype=torch.float64)
    victims = Victims(
        originals,
        torch.as_tensor(np.asarray(victims_obfuscated), dtype=torch.float64),
        content_ids(originals),
    )
    # float64 factors: the scheme's sign rule (largest entry of each u_i positive) flips a whole
    # column on a near-tie, so float32 rounding noise would move look-alikes between runs.
    context = AttackContext(
        threat=ThreatModel.A1,
        params=params,
        public=torch.as_tensor(np.asarray(public), dtype=torch.float32),
        dtype=torch.float64,
    )
    context.check_victims(victims)
    assert context.public is not None
    pool = make_pool(context, victims, distractors=None, seed=seed)
    with torch.no_grad():
        shared = dict(
            victims=victims,
            context=context,
            public_factors=factors(context.public, context).double(),
            pool_factors=factors(pool.images, context).double(),
            pool_truth=pool.truth,
            basis=public_basis(context).double(),
            public_gram=_centred_gram(context.public),
            size=stem.size,
            neighbours=tuple(neighbours),
        )
        left = stem.left.detach().double().cpu().numpy()
        right = stem.right.detach().double().cpu().numpy()
        realistic = _view(left, right, **shared)

        bound, alignment = None, {}
        if params.preset is Preset.SVD:
            key_matrices = {}
        if key_matrices is not None:
            key_left, key_right = key_matrices.get("left"), key_matrices.get("right")
            if (key_left is None) != (params.left is LeftProjection.NONE or params.preset is Preset.SVD):
                raise NotApplicableError("the key's left matrix R_L does not match the scheme")
            if (key_right is None) != (
                params.right is RightProjection.NONE or params.preset is Preset.SVD
            ):
                raise NotApplicableError("the key's right matrix R_R does not match the scheme")
            target_left, target_right = exact_unmixing(
                n=n, k=k, size=stem.size, left=key_left, right=key_right
            )
            if target_right.shape[0] != stem.in_shape[1]:
                raise NotApplicableError(
                    f"R_R is {key_right.shape[0]} x {key_right.shape[1]}; the stem reads "
                    f"{stem.in_shape[1]} columns"
                )
            span_left, span_right = in_span(
                left, right, target_left=target_left, target_right=target_right
            )
            bound = _view(span_left, span_right, **shared)
            alignment = stem_alignment(stem, left=key_left, right=key_right)
    yardstick = ssim(originals, context.public.double().mean(dim=0).expand_as(originals))
    return StemAttackResult(
        yardstick_ssim=float(yardstick.mean()),
        realistic=realistic,
        bound=bound,
        alignment=alignment,
        pool_size=len(pool.images),
    )
