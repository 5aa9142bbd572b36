"""SYNTHETIC data sets: shapes, determinism, lesion models, learnability, and the PNG writer."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medveil.synthetic import DATASETS, brain_anatomy, image_rngs, make_dataset
from medveil.synthetic import brain as brain_module
from medveil.synthetic.write import write_dataset

NAMES = sorted(DATASETS)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_range_and_balance(name: str) -> None:
    images, labels = make_dataset(name, per_class=3, size=48, seed=0)
    n_classes = len(DATASETS[name].classes)
    assert images.shape == (3 * n_classes, 48, 48) and images.dtype == np.float32
    assert labels.dtype == np.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert np.array_equal(labels, np.repeat(np.arange(n_classes), 3))
    assert all(im.std() > 0.05 for im in images)  # never blank


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_from_seed(name: str) -> None:
    a, _ = make_dataset(name, per_class=2, size=40, seed=7)
    b, _ = make_dataset(name, per_class=2, size=40, seed=7)
    c, _ = make_dataset(name, per_class=2, size=40, seed=8)
    assert np.array_equal(a, b)
    assert all(np.abs(x - y).mean() > 0.01 for x, y in zip(a, c, strict=True))


def test_images_do_not_depend_on_how_many_are_rendered() -> None:
    small, _ = make_dataset("ovary-us", per_class=2, size=40, seed=3)
    large, labels = make_dataset("ovary-us", per_class=5, size=40, seed=3)
    assert np.array_equal(small[:2], large[labels == 0][:2])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="brain-mri, ovary-us"):
        make_dataset("chest-xray", per_class=1)
    with pytest.raises(ValueError, match="per_class"):
        make_dataset("brain-mri", per_class=0)
    with pytest.raises(ValueError, match="size"):
        make_dataset("ovary-us", per_class=1, size=31)


def test_template_is_read_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    path = brain_module.template_path()
    assert "nilearn" in path.parts and path.is_file()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the synthetic brain data set tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    brain_anatomy.load_volumes.cache_clear()
    images, _ = make_dataset("brain-mri", per_class=1, size=32, seed=0)
    assert images.max() > 0.3


def _brain_with_and_without_lesions(per_class: int, size: int) -> tuple[np.ndarray, ...]:
    classes = DATASETS["brain-mri"].classes
    labels = np.repeat(np.arange(len(classes)), per_class)
    indices = np.tile(np.arange(per_class), len(classes))
    args = ("brain-mri", 0, labels, indices)
    with_lesion = brain_module.render(labels, image_rngs(*args), size)
    base = brain_module.render(labels, image_rngs(*args), size, lesions=False)
    return with_lesion, base, labels


def test_lesion_models_differ_by_class() -> None:
    size = 96
    with_lesion, base, labels = _brain_with_and_without_lesions(per_class=10, size=size)
    changed = np.abs(with_lesion - base) > 0.1
    area = changed.mean(axis=(1, 2))
    rows, cols = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    offset = np.array(
        [
            np.hypot(rows[c].mean() - centre, cols[c].mean() - centre) / size if c.any() else 0
            for c in changed
        ]
    )
    notumor = labels == DATASETS["brain-mri"].classes.index("notumor")
    assert np.array_equal(with_lesion[notumor], base[notumor])
    # Every tumour is visible and local: it changes a few percent of the slice, not all of it.
    assert np.all((area[~notumor] > 0.002) & (area[~notumor] < 0.3))
    by_class = {c: labels == k for k, c in enumerate(DATASETS["brain-mri"].classes)}
    # Pituitary tumours sit near the middle of the head (midline, skull base); meningiomas
    # against the skull, further out than intra-axial gliomas on average.
    assert np.all(offset[by_class["pituitary"]] < 0.3)
    assert offset[by_class["meningioma"]].mean() > offset[by_class["glioma"]].mean()
    # Gliomas are the largest lesions (mass, oedema); pituitary adenomas the smallest.
    assert area[by_class["glioma"]].mean() > area[by_class["pituitary"]].mean()


def _random_features(images: np.ndarray, filters: int = 64) -> np.ndarray:
    """Fixed random 7x7 filters at two scales, ReLU, max and mean pooled: no training."""
    generator = torch.Generator().manual_seed(0)
    x = torch.from_numpy(images)[:, None]
    pooled = []
    for scale in (1, 2):
        z = F.avg_pool2d(x, scale) if scale > 1 else x
        w = torch.randn(filters, 1, 7, 7, generator=generator)
        response = F.relu(F.conv2d(z, w - w.mean(dim=(2, 3), keepdim=True)))
        pooled += [response.amax(dim=(2, 3)), response.mean(dim=(2, 3))]
    return torch.cat(pooled, 1).numpy().astype(np.float64)


def _held_out_accuracy(name: str, *, size: int, ridge: float) -> float:
    """Ridge classifier on random features: 40 training and 20 test images per class."""
    per_class, n_train = 60, 40
    start = time.perf_counter()
    images, labels = make_dataset(name, per_class=per_class, size=size, seed=0)
    rate = len(images) / (time.perf_counter() - start)
    features = _random_features(images)
    train = np.arange(len(labels)) % per_class < n_train
    mean, std = features[train].mean(0), features[train].std(0) + 1e-9
    features = np.hstack([(features - mean) / std, np.ones((len(labels), 1))])
    targets = np.eye(labels.max() + 1)[labels[train]]
    gram = features[train].T @ features[train] + ridge * np.eye(features.shape[1])
    weights = np.linalg.solve(gram, features[train].T @ targets)
    accuracy = float((np.argmax(features[~train] @ weights, 1) == labels[~train]).mean())
    print(f"{name}: {rate:.0f} images/s at {size} px; held-out accuracy {accuracy:.2f}")
    return accuracy


def test_brain_classes_are_learnable() -> None:
    assert _held_out_accuracy("brain-mri", size=64, ridge=100.0) > 0.45  # chance: 0.25


def test_ovary_classes_are_learnable() -> None:
    assert _held_out_accuracy("ovary-us", size=128, ridge=10.0) > 0.7  # chance: 0.5


def _png_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix == ".png")


def test_write_dataset_layout_readme_and_pixels(tmp_path: Path) -> None:
    out = tmp_path / "ovary"
    advanced: list[int] = []
    result = write_dataset("ovary-us", out, per_class=3, size=40, seed=5, progress=advanced.append)
    assert result.path == out
    assert result.counts == {"all": {"infected": 3, "notinfected": 3}}
    assert sum(advanced) == 6
    files = _png_files(out)
    assert [p.relative_to(out).as_posix() for p in files] == [
        f"{c}/{c}-{i:05d}.png" for c in ("infected", "notinfected") for i in range(3)
    ]
    readme = (out / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "seed: 5" in readme and "medveil version" in readme
    images, _ = make_dataset("ovary-us", per_class=3, size=40, seed=5)
    png = np.asarray(Image.open(out / "notinfected" / "notinfected-00001.png"))
    assert png.dtype == np.uint8 and png.shape == (40, 40)
    assert np.array_equal(png, np.rint(images[4] * 255).astype(np.uint8))
    assert not list(out.rglob("*.tmp"))


def test_write_dataset_split_and_rerun(tmp_path: Path) -> None:
    out = tmp_path / "brain"
    result = write_dataset("brain-mri", out, per_class=5, size=32, test_fraction=0.4)
    classes = DATASETS["brain-mri"].classes
    assert result.counts == {
        "Training": {c: 3 for c in classes},
        "Testing": {c: 2 for c in classes},
    }
    assert len(list((out / "Testing" / "glioma").glob("*.png"))) == 2
    first = {p: p.read_bytes() for p in _png_files(out)}
    # Same arguments: the same files again. Other arguments: no stale images left behind.
    write_dataset("brain-mri", out, per_class=5, size=32, test_fraction=0.4)
    assert {p: p.read_bytes() for p in _png_files(out)} == first
    write_dataset("brain-mri", out, per_class=2, size=32)
    assert len(_png_files(out)) == 2 * len(classes)


def test_write_dataset_refuses_foreign_folders(tmp_path: Path) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="photos"):
        write_dataset("ovary-us", foreign, per_class=1, size=32)
    other = tmp_path / "ovary"
    write_dataset("ovary-us", other, per_class=1, size=32)
    with pytest.raises(ValueError, match="ovary"):
        write_dataset("brain-mri", other, per_class=1, size=32)
    with pytest.raises(ValueError, match="test_fraction"):
        write_dataset("ovary-us", tmp_path / "new", per_class=2, size=32, test_fraction=1.0)
