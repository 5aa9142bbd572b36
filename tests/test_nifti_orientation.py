"""NIfTI volumes stored in a permuted, flipped voxel order are sliced in RAS+ order.

The reference is built by hand: a volume ``C`` laid out in RAS+ order is written to disk with
its axes permuted and one flipped, under the affine that maps the stored voxels back onto
``C``'s grid. Slicing the file along ``--nifti-axis a`` must give ``C``'s slices along ``a``.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medveil.cli import app
from medveil.keys import Key
from medveil.loading import LoadOptions, load_slices
from medveil.obfuscator import Obfuscator
from medveil.store import ObfuscatedStore

N = 24


def canonical_volume(seed: int) -> np.ndarray:
    """A ``C[x, y, z]`` volume whose every slice along every axis is distinct and not constant."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, N),) * 3, indexing="ij")
    volume = np.exp(-((x - 0.3) ** 2 + (y + 0.2) ** 2 + (z - 0.1) ** 2) * 2.0)
    volume += 0.3 * x + 0.2 * y**2 - 0.1 * z + 0.05 * rng.standard_normal(volume.shape)
    return volume.astype(np.float32)


def write_permuted(volume: np.ndarray, path) -> None:
    # stored[i, j, k] = C[k, N - 1 - i, j]: world x = k, y = N - 1 - i, z = j.
    stored = np.ascontiguousarray(np.transpose(volume, (1, 2, 0))[::-1])
    affine = np.array(
        [[0, 0, 1, 0], [-1, 0, 0, N - 1], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64
    )
    nib.save(nib.Nifti1Image(stored, affine), path)


def minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min())


def reference_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    return np.stack([minmax(np.take(volume, i, axis=axis)) for i in range(N)])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_follow_the_ras_axes_whatever_the_storage_order(tmp_path, axis: int) -> None:
    volume = canonical_volume(0)
    write_permuted(volume, tmp_path / "vol.nii.gz")
    options = LoadOptions(size=N, nifti_axis=axis)
    got = np.stack(load_slices(tmp_path / "vol.nii.gz", options=options))
    want = reference_slices(volume, axis)
    assert got.shape == (N, N, N)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # The stored order gives other slices: a loader that skipped the reorientation would fail.
    stored = np.asarray(nib.load(tmp_path / "vol.nii.gz").dataobj)
    assert np.abs(reference_slices(stored, axis) - want).max() > 0.1


def test_nifti_axis_through_the_shell(tmp_path) -> None:
    runner = CliRunner()
    key_path = tmp_path / "keys" / "svd.key"
    made = runner.invoke(
        app, ["keygen", "--preset", "svd", "--size", str(N), "--rank", "4", "-o", str(key_path)]
    )
    assert made.exit_code == 0, made.output
    volumes = {"a": canonical_volume(1), "b": canonical_volume(2)}
    for name, volume in volumes.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        write_permuted(volume, tmp_path / "data" / name / "vol.nii.gz")
    run = runner.invoke(
        app,
        ["obfuscate", str(tmp_path / "data"), "--key", str(key_path), "-o",
         str(tmp_path / "store"), "--device", "cpu", "--nifti-axis", "0"],
    )
    assert run.exit_code == 0, run.output
    split = ObfuscatedStore(tmp_path / "store").split("all")
    assert split.labels.tolist() == [0] * N + [1] * N
    plain = np.concatenate([reference_slices(v, 0) for v in volumes.values()])
    want = Obfuscator(Key.load(key_path))(plain.astype(np.float32))
    np.testing.assert_allclose(split.arrays(range(len(split))), want, rtol=0, atol=1e-4)
