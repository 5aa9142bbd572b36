"""The transforms against independent references written here in NumPy.

Each reference is built from the method's definition (``METHOD.md``), not from the code under
test: the multistage output ``(R_L (Q(Z) + eps) R_R - mean) / std`` with the noise pinned,
the calibration constants, the Haar-orthogonal matrix through a Cholesky QR, and the
truncation's near-optimality on brain-like images against the bound the README states.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import smooth_images
from medveil.calibration import calibrate
from medveil.derive import (
    DERIVATIONS,
    keyed_block_orthogonal,
    keyed_gaussian,
    keyed_normals,
    keyed_orthogonal,
)
from medveil.keys import Calibration, Key, SchemeParams
from medveil.obfuscator import Obfuscator
from medveil.stages import truncated_svd

N, RANK, BITS = 32, 6, 4


def reference_factor(images: np.ndarray, rank: int) -> np.ndarray:
    """``Z = U_k S_k`` by NumPy's SVD, each column's largest-magnitude entry made positive."""
    u, s, _ = np.linalg.svd(images.astype(np.float64))
    z = u[..., :rank] * s[..., None, :rank]
    rows = np.abs(z).argmax(axis=-2)
    signs = np.sign(np.take_along_axis(z, rows[..., None, :], axis=-2))
    return z * np.where(signs == 0, 1.0, signs)


def reference_quantized(z: np.ndarray, *, bits: int, clip: float) -> np.ndarray:
    """Uniform ``b``-bit quantization over ``[-c, c]`` with clipping, dequantized."""
    levels = 2**bits - 1
    codes = np.round((np.clip(z, -clip, clip) + clip) / (2 * clip) * levels)
    return codes * (2 * clip / levels) - clip


def reference_multistage(key: Key, images: np.ndarray, *, noise_seed: int) -> np.ndarray:
    """``(R_L (Q(Z) + eps) R_R - mean) / std`` with ``eps`` drawn image by image from Philox."""
    p, cal = key.params, key.calibration
    assert cal is not None and p.bits is not None
    z = reference_quantized(reference_factor(images, p.rank), bits=p.bits, clip=cal.clip)
    rng = np.random.Generator(np.random.Philox(noise_seed))
    z = z + rng.standard_normal(z.shape) * (p.noise * cal.clip)
    return (key.left_matrix() @ z @ key.right_matrix() - cal.mean) / cal.std


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return smooth_images(5, N, seed=21).astype(np.float64)


@pytest.fixture(scope="module")
def key() -> Key:
    # The exact solver and float64 make the comparison tight; constants chosen by hand so that
    # the calibration code is not part of this reference.
    params = SchemeParams(
        preset="multistage", size=N, rank=RANK, bits=BITS, noise=0.1, solver="exact"
    )
    calibration = Calibration(clip=4.0, mean=0.3, std=1.7, images=1)
    return Key(secret=bytes(range(32)), params=params, calibration=calibration)


def test_multistage_output_matches_the_numpy_composition(key: Key, images: np.ndarray) -> None:
    want = reference_multistage(key, images, noise_seed=7)
    got = Obfuscator(key, dtype=torch.float64, noise_seed=7)(images)
    assert got.shape == (5, N, N)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # Each stage moves the output far more than the tolerance: quantization, noise, the scale.
    for changed in (
        key.with_params(bits=BITS + 4),
        key.with_params(noise=0.05),
    ):
        changed.calibration = key.calibration
        other = Obfuscator(changed, dtype=torch.float64, noise_seed=7)(images)
        assert np.abs(other - want).max() > 1e-2


@pytest.mark.parametrize("layout", ["B1nn", "Bnn", "1nn", "nn", "numpy-nn"])
def test_every_input_layout_gives_the_reference(key: Key, images: np.ndarray, layout: str) -> None:
    # One image, so that every layout draws the same noise: a transposed or mixed-up layout
    # gives another factor, hence another output.
    x = images[2]
    want = reference_multistage(key, x[None], noise_seed=3)[0]
    t = torch.from_numpy(x)
    inputs = {
        "B1nn": t[None, None],
        "Bnn": t[None],
        "1nn": t[None],
        "nn": t,
        "numpy-nn": x,
    }
    got = Obfuscator(key, dtype=torch.float64, noise_seed=3)(inputs[layout])
    got = np.asarray(got).reshape(N, N)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert np.abs(want - want.T).max() > 0.1  # a transposed input would not pass


def test_float32_subspace_path_is_close_to_the_reference(images: np.ndarray) -> None:
    # The default path (float32, subspace solver): a quantization code can flip where a factor
    # entry sits on a step boundary, so compare the median and the bulk.
    params = SchemeParams(preset="multistage", size=N, rank=RANK, bits=8, noise=0.02)
    key = Key(
        secret=bytes(range(32)),
        params=params,
        calibration=Calibration(clip=4.0, mean=0.3, std=1.7, images=1),
    )
    want = reference_multistage(key, images, noise_seed=5)
    got = Obfuscator(key, noise_seed=5)(images.astype(np.float32))
    err = np.abs(got - want)
    assert np.median(err) < 1e-4 and np.quantile(err, 0.99) < 5e-3


def test_svd_preset_outputs_the_reference_factor(images: np.ndarray) -> None:
    key = Key(
        secret=bytes(32),
        params=SchemeParams.for_preset("svd", size=N, rank=RANK, solver="exact"),
    )
    got = Obfuscator(key, dtype=torch.float64)(images)
    np.testing.assert_allclose(got, reference_factor(images, RANK), rtol=0, atol=1e-10)


def test_calibration_constants_match_their_definition(images: np.ndarray) -> None:
    # Without noise the constants are deterministic: c is the percentile of |Z| over every
    # entry of the batch's factors, mean and std those of R_L Q(Z) R_R over every entry.
    params = SchemeParams(
        preset="multistage", size=N, rank=RANK, bits=BITS, noise=0.0, clip_percentile=97.0
    )
    key = calibrate(Key(secret=bytes(range(32)), params=params), images.astype(np.float32))
    cal = key.calibration
    assert cal is not None and cal.images == len(images)
    z = reference_factor(images, RANK)
    clip = np.percentile(np.abs(z), 97.0)
    assert cal.clip == pytest.approx(clip, rel=1e-4)
    y = key.left_matrix() @ reference_quantized(z, bits=BITS, clip=cal.clip) @ key.right_matrix()
    # float32 factors from the subspace solver: a few 4-bit codes differ from the reference's.
    assert cal.mean == pytest.approx(y.mean(), abs=1e-4 * y.std())
    assert cal.std == pytest.approx(y.std(), rel=1e-4)
    # And so the calibration set's output is standardised to the float32 rounding.
    out = Obfuscator(key)(images.astype(np.float32))
    assert abs(float(out.mean())) < 1e-4 and float(out.std()) == pytest.approx(1.0, abs=1e-4)


# --- the keyed matrices -----------------------------------------------------------------------


def haar_by_cholesky(gaussian: np.ndarray) -> np.ndarray:
    """``Q = G R^-1`` with ``R`` the Cholesky factor of ``G^T G``: the QR factorisation whose
    ``R`` has a positive diagonal, which makes ``Q`` Haar distributed for a Gaussian ``G``."""
    upper = np.linalg.cholesky(gaussian.T @ gaussian).T
    return np.linalg.solve(upper.T, gaussian.T).T


@pytest.mark.parametrize("derivation", DERIVATIONS)
def test_keyed_orthogonal_is_the_positive_diagonal_qr(derivation: str) -> None:
    secret = bytes(range(1, 33))
    for n in (3, 12):
        g = keyed_normals(secret, f"q{n}", (n, n), derivation=derivation)
        q = keyed_orthogonal(secret, f"q{n}", n, derivation=derivation)
        np.testing.assert_allclose(q, haar_by_cholesky(g), rtol=0, atol=1e-8)


def test_keyed_orthogonal_entries_are_symmetric_about_zero() -> None:
    # Haar measure is invariant under sign flips, so Q[0, 0] is positive half the time; plain
    # Householder QR (R with LAPACK's signs) makes it one-signed.
    secret = bytes(range(32))
    corner = np.array([keyed_orthogonal(secret, f"haar/{i}", 4)[0, 0] for i in range(400)])
    assert 0.4 < np.mean(corner > 0) < 0.6
    assert abs(corner.mean()) < 0.05 and np.mean(corner**2) == pytest.approx(0.25, abs=0.03)


def test_keyed_gaussian_and_block_matrices_are_built_from_the_normals() -> None:
    secret = bytes(range(32))
    np.testing.assert_array_equal(
        keyed_gaussian(secret, "r", 5, 9), keyed_normals(secret, "r", (5, 9)) / np.sqrt(5)
    )
    block = keyed_block_orthogonal(secret, "b", 10, 4)
    want = np.zeros((10, 10))
    for i, start in enumerate((0, 4, 8)):
        size = min(4, 10 - start)
        want[start : start + size, start : start + size] = keyed_orthogonal(secret, f"b/{i}", size)
    np.testing.assert_array_equal(block, want)


# --- the truncation's accuracy ----------------------------------------------------------------


def test_subspace_truncation_is_within_the_documented_bound_on_brain_images() -> None:
    # README: "on real brain MRI its rank-k residual is within 0.02% of optimal". The synthetic
    # brain slices (cut from the MNI152 template) measure 1.0000056 at 64 px, k = 16.
    from medveil.synthetic import make_dataset

    images, _ = make_dataset("brain-mri", per_class=4, size=64, seed=0)
    x = torch.from_numpy(images)
    fast = truncated_svd(x, 16, solver="subspace")
    u, s, vt = np.linalg.svd(images.astype(np.float64))
    optimal = np.sqrt((s[:, 16:] ** 2).sum(axis=1))
    residual = np.linalg.norm(images - fast.approximation().double().numpy(), axis=(1, 2))
    assert float((residual / optimal).max()) < 1.0002
    # The singular values it reports are the image's own, leading ones to float32 rounding.
    np.testing.assert_allclose(fast.singular_values[:, :8], s[:, :8], rtol=1e-5)


# --- attack building blocks -------------------------------------------------------------------


def test_leading_bits_keep_the_top_bits_and_fill_the_middle_of_the_dropped_range() -> None:
    from medveil.attacks.lba import leading_bits

    bits = 6
    codes = torch.arange(2**bits, dtype=torch.int32)
    for keep in range(1, bits + 1):
        dropped = bits - keep
        step = 2**dropped
        want = [min((q // step) * step + (step // 2 if dropped else 0), 2**bits - 1) for q in
                range(2**bits)]
        assert leading_bits(codes, bits=bits, keep=keep).tolist() == want


def reference_public_basis(images: np.ndarray, rank: int, passes: int) -> np.ndarray:
    """``METHOD.md``: the sign-aligned mean of the public images' ``V_k``, re-orthonormalised
    (Gram-Schmidt, positive diagonal), aligned first to the first image's basis, then to the
    previous estimate."""
    bases = []
    for x in images.astype(np.float64):
        u, s, vt = np.linalg.svd(x)
        z = u[:, :rank] * s[:rank]
        signs = np.sign(z[np.abs(z).argmax(axis=0), np.arange(rank)])
        bases.append(vt[:rank].T * np.where(signs == 0, 1.0, signs))
    bases = np.stack(bases)
    ref = bases[0]
    for _ in range(passes):
        signs = np.sign((bases * ref).sum(axis=1, keepdims=True))
        q, r = np.linalg.qr((bases * np.where(signs == 0, 1.0, signs)).mean(axis=0))
        ref = q * np.sign(np.diag(r))
    return ref


def test_public_basis_is_the_aligned_mean_of_the_public_bases() -> None:
    from medveil.attacks import AttackContext, ThreatModel
    from medveil.attacks.recovery import public_basis

    public = smooth_images(12, N, seed=30)
    params = SchemeParams.for_preset("svd", size=N, rank=RANK, solver="exact")
    context = AttackContext(
        threat=ThreatModel.A1, params=params, public=torch.from_numpy(public),
        dtype=torch.float64,
    )
    for passes in (1, 2):
        got = public_basis(context, passes=passes).numpy()
        np.testing.assert_allclose(got, reference_public_basis(public, RANK, passes), atol=1e-8)


@pytest.mark.parametrize("size", [8, 5])
def test_pooled_features_are_window_means(size: int) -> None:
    from medveil.attacks.kpl import pooled_features

    y = np.random.default_rng(0).standard_normal((3, 32, 20))
    # Window i covers [floor(i n / s), ceil((i + 1) n / s)) in each direction.
    def windows(n: int, s: int) -> list[slice]:
        return [slice(i * n // s, -(-(i + 1) * n // s)) for i in range(s)]

    want = np.stack([
        np.array([[img[r, c].mean() for c in windows(20, size)] for r in windows(32, size)])
        for img in y
    ]).reshape(3, -1)
    got = pooled_features(torch.from_numpy(y), size).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
