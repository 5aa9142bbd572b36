"""The small helpers that each exist once: the image-layout reader and the batched obfuscation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medveil import Obfuscator, calibrate, generate_key
from medveil.batched import obfuscate_batches
from medveil.errors import LoadError
from medveil.metrics import mse
from medveil.shapes import image_batch

RNG = np.random.default_rng(7)
IMAGES = RNG.random((7, 16, 16), dtype=np.float32)


def test_every_accepted_layout_reads_as_the_same_batch() -> None:
    want = torch.from_numpy(IMAGES)
    for layout in (IMAGES, IMAGES[:, None], want, want[:, None], IMAGES.tolist()):
        got = image_batch(layout)
        assert got.shape == (7, 16, 16)
        assert torch.equal(got, want)
    assert torch.equal(image_batch(IMAGES[3]), want[3:4])
    mine = want.clone()
    image_batch(mine[:, None])[0, 0, 0] = 5.0  # a tensor is read in place, not copied
    assert mine[0, 0, 0] == 5.0


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 3, 16, 16), r"must have one channel, \(B, 1, n, n\), got \(2, 3, 16, 16\)"),
        ((16,), r"must be \(B, n, n\), \(B, 1, n, n\) or \(n, n\), got \(16,\)"),
        ((1, 1, 1, 16, 16), r"must be \(B, n, n\), \(B, 1, n, n\) or \(n, n\), got \(1, 1, 1, 16, 16\)"),
    ],
)
def test_other_layouts_are_refused_by_name(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match="images " + message):
        image_batch(np.zeros(shape))
    with pytest.raises(LoadError, match="^calibration images " + message):
        image_batch(np.zeros(shape), what="calibration images", error=LoadError)


def test_the_layout_reader_serves_the_metrics_and_calibration() -> None:
    a, b = IMAGES[:2], IMAGES[2:4]
    expected = ((a.astype(np.float64) - b) ** 2).mean(axis=(1, 2))  # metrics work in float64
    np.testing.assert_allclose(mse(a[:, None], b[:, None]), expected, rtol=1e-12)
    np.testing.assert_allclose(mse(a[0], b[0]), expected[:1], rtol=1e-12)
    key = generate_key(size=16, rank=4)
    with pytest.raises(LoadError, match="calibration images must have one channel"):
        calibrate(key, np.zeros((2, 3, 16, 16), np.float32))
    one_channel = calibrate(key, IMAGES[:, None]).calibration
    assert one_channel is not None and one_channel.images == 7


def test_batches_give_what_one_call_gives() -> None:
    obfuscator = Obfuscator(generate_key(preset="svd", size=16, rank=4))  # no noise
    whole = obfuscator.obfuscate(torch.from_numpy(IMAGES))
    for images in (IMAGES, torch.from_numpy(IMAGES), list(IMAGES)):
        for batch_size in (1, 3, 7, 100):
            got = obfuscate_batches(obfuscator, images, batch_size=batch_size)
            assert got.shape == (7, 16, 4) and got.dtype == torch.float32
            torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-6)


def test_batches_are_read_one_slice_at_a_time_and_get_fresh_noise() -> None:
    key = calibrate(generate_key(size=16, rank=4), IMAGES)
    reads: list[slice] = []

    class Reader:
        def __len__(self) -> int:
            return len(IMAGES)

        def __getitem__(self, rows: slice) -> np.ndarray:
            reads.append(rows)
            return IMAGES[rows]

    out = obfuscate_batches(Obfuscator(key), Reader(), batch_size=3)
    assert reads == [slice(0, 3), slice(3, 6), slice(6, 9)]
    again = obfuscate_batches(Obfuscator(key), IMAGES, batch_size=3)
    assert out.shape == again.shape == (7, 16, 16)
    assert not torch.equal(out, again)  # fresh noise on every run
    pinned = [obfuscate_batches(Obfuscator(key, noise_seed=1), IMAGES, batch_size=3) for _ in "ab"]
    assert torch.equal(pinned[0], pinned[1])


def test_no_images_give_an_empty_batch_and_a_bad_batch_size_is_refused() -> None:
    obfuscator = Obfuscator(generate_key(preset="svd", size=16, rank=4), dtype=torch.float64)
    empty = obfuscate_batches(obfuscator, IMAGES[:0])
    assert empty.shape == (0, 16, 4) and empty.dtype == torch.float64
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        obfuscate_batches(obfuscator, IMAGES, batch_size=0)
