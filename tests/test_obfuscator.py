from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medveil.calibration import calibrate
from medveil.errors import InvalidKeyError
from medveil.keys import Key, generate_key
from medveil.obfuscator import Obfuscator


@pytest.fixture(scope="module")
def key(images32):
    return calibrate(generate_key(size=32, rank=6, noise=0.05), images32)


def test_output_is_standardised_on_the_calibration_set(key, images32):
    y = Obfuscator(key)(images32)
    assert y.shape == (24, 32, 32)
    assert abs(float(y.mean())) < 0.1 and abs(float(y.std()) - 1) < 0.1


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((5, 1, 32, 32), (5, 1, 32, 32)),
        ((5, 32, 32), (5, 32, 32)),
        ((1, 32, 32), (1, 32, 32)),
        ((32, 32), (32, 32)),
    ],
)
def test_accepts_torch_layouts(key, images32, shape, expected):
    x = torch.from_numpy(images32[: int(np.prod(shape)) // (32 * 32)]).reshape(shape)
    y = Obfuscator(key)(x)
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == expected


def test_numpy_in_numpy_out(key, images32):
    obf = Obfuscator(key)
    assert isinstance(obf(images32[:3]), np.ndarray) and obf(images32[:3]).shape == (3, 32, 32)
    assert obf(images32[0]).shape == (32, 32)
    channel = obf(images32[:3, None])
    assert isinstance(channel, np.ndarray) and channel.shape == (3, 1, 32, 32)
    pinned = Obfuscator(key, noise_seed=0)(images32[:3, None])[:, 0]
    assert np.array_equal(pinned, Obfuscator(key, noise_seed=0)(images32[:3]))


def test_svd_preset_outputs_the_factor(images32):
    key = generate_key(preset="svd", size=32, rank=5)
    y = Obfuscator(key)(images32[:4])
    assert y.shape == (4, 32, 5)
    # Z = U_k S_k: its column norms are the leading singular values of the image.
    s = np.linalg.svd(images32[:4].astype(np.float64), compute_uv=False)[:, :5]
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), s, rtol=1e-3)


def test_same_output_whatever_the_batch_size_with_pinned_noise(key, images32):
    whole = Obfuscator(key, noise_seed=3)(images32)
    obf = Obfuscator(key, noise_seed=3)
    parts = np.concatenate([obf(images32[:7]), obf(images32[7:8]), obf(images32[8:])])
    np.testing.assert_allclose(whole, parts, atol=1e-4)


def test_fresh_noise_differs_between_runs(key, images32):
    a, b = Obfuscator(key)(images32), Obfuscator(key)(images32)
    assert not np.allclose(a, b)
    # ...but only by the noise: the keyed transform itself is the same.
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_float64_agrees_with_float32(key, images32):
    y32 = Obfuscator(key, noise_seed=1)(images32)
    y64 = Obfuscator(key, noise_seed=1, dtype=torch.float64)(images32.astype(np.float64))
    # Tolerance: a few quantization steps can flip at float32 round-off; compare robustly.
    assert np.median(np.abs(y32 - y64)) < 1e-4


def test_same_output_in_another_process(key, images32, tmp_path):
    path = key.save(tmp_path / "k.key")
    np.save(tmp_path / "x.npy", images32[:4])
    code = (
        "import numpy as np; from medveil.keys import Key; from medveil.obfuscator import Obfuscator;"
        f"k = Key.load(r'{path}'); x = np.load(r'{tmp_path / 'x.npy'}');"
        f"np.save(r'{tmp_path / 'y.npy'}', Obfuscator(k, noise_seed=11)(x))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    here = Obfuscator(Key.load(path), noise_seed=11)(images32[:4])
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), here, atol=1e-5)


def test_different_keys_give_unrelated_outputs(images32):
    a = calibrate(generate_key(size=32, rank=6, noise=0.0), images32)
    b = Key(secret=bytes(32), params=a.params, calibration=a.calibration)
    ya, yb = Obfuscator(a)(images32), Obfuscator(b)(images32)
    assert abs(np.corrcoef(ya.ravel(), yb.ravel())[0, 1]) < 0.2


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.full((2, 32, 32), np.nan, np.float32), "NaN"),
        (np.full((2, 32, 32), 2.0, np.float32), r"\[0, 1\]"),
        (np.zeros((2, 16, 16), np.float32), "shape"),
        (np.zeros((2, 32, 32), np.uint8), "floating"),
        (np.zeros((2, 3, 32, 32), np.float32), "channel"),
        ([[0.5]], "numpy.ndarray"),
    ],
)
def test_bad_input_is_refused_clearly(key, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Obfuscator(key)(bad)


def test_uncalibrated_multistage_key_is_refused():
    with pytest.raises(InvalidKeyError, match="not calibrated"):
        Obfuscator(generate_key(size=32, rank=4))


class _Images(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(torch.from_numpy(self.images[i])[None])


def test_works_as_a_transform_in_a_dataloader_with_workers(key, images32):
    loader = DataLoader(_Images(images32, Obfuscator(key)), batch_size=6, num_workers=2)
    batches = list(loader)
    assert torch.cat(batches).shape == (24, 1, 32, 32)
    # Forked workers must not share one noise stream: the same image, one batch per worker.
    same = np.repeat(images32[:1], 12, axis=0)
    loader = DataLoader(_Images(same, Obfuscator(key)), batch_size=6, num_workers=2)
    first, second = list(loader)
    assert not torch.allclose(first, second)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_cpu(key, images32):
    x = torch.from_numpy(images32)
    cpu = Obfuscator(key, noise_seed=2)(x)
    gpu = Obfuscator(key, noise_seed=2)(x.cuda()).cpu()
    assert float((cpu - gpu).abs().median()) < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_folder_obfuscation_with_worker_threads_in_a_fresh_process(tmp_path):
    # torch loads its CUDA linear algebra on the first call, and two threads making it at once
    # fail: a fresh process (nothing loaded yet) obfuscates a folder with four worker threads.
    script = f"""
import numpy as np
from PIL import Image
from pathlib import Path
from medveil.engine_local import LocalEngine
from medveil.keys import generate_key
from medveil.obfuscate import obfuscate_dataset
from medveil.store import ObfuscatedStore
root = Path({str(tmp_path)!r}) / "data"
rng = np.random.default_rng(0)
for label in ("a", "b"):
    (root / label).mkdir(parents=True)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / label / f"{{i}}.png")
from medveil.calibration import calibrate
key = calibrate(generate_key(size=32, rank=8), rng.random((16, 32, 32)))
out = Path({str(tmp_path)!r}) / "store"
obfuscate_dataset(root, key=key, output=out, engine=LocalEngine(workers=4, batch_size=4, device="cuda"))
store = ObfuscatedStore(out)
print(sum(len(store.split(name)) for name in store.splits))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "48"
