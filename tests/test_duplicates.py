"""Near-duplicate groups and splits that keep each group on one side."""

from __future__ import annotations

import numpy as np

from conftest import smooth_images
from medveil.duplicates import near_duplicate_groups, perceptual_hashes
from medveil.training import DataSource
from medveil.training.data import plan_splits


def test_resaved_copies_are_grouped_and_distinct_images_are_not():
    base = smooth_images(12, 64, seed=5)
    rng = np.random.default_rng(0)
    # A re-saved copy: 8-bit rounding and a faint noise, as a JPEG round trip leaves.
    copies = np.clip(np.round(base[:4] * 255) / 255 + rng.normal(0, 0.004, base[:4].shape), 0, 1)
    images = np.concatenate([base, copies])
    groups = near_duplicate_groups(images)
    assert groups[12:].tolist() == groups[:4].tolist()
    assert len(np.unique(groups)) == 12
    # Hashes computed once give the same groups; a zero distance still links exact copies only.
    hashes = perceptual_hashes(images)
    assert np.array_equal(near_duplicate_groups(hashes=hashes), groups)
    assert hashes.shape == (16, 64) and hashes.dtype == bool


def test_grouped_splits_never_cut_a_group_and_stay_stratified():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 100)
    # Groups of 1-5 examples of one class each.
    groups = np.concatenate([
        np.repeat(np.arange(c * 1000, c * 1000 + 60), rng.integers(1, 6, 60))[:100]
        for c in range(4)
    ])
    images = rng.random((400, 8, 8)).astype(np.float32)
    source = DataSource.from_arrays(images, labels, classes=list("abcd")).with_groups(
        {"all": groups}
    )
    plan = plan_splits(source, val_fraction=0.15, test_fraction=0.2, seed=0)
    sides = {role: set(groups[idx].tolist()) for role, (_, idx) in plan.parts.items()}
    assert not sides["train"] & sides["test"] and not sides["train"] & sides["val"]
    assert not sides["val"] & sides["test"]
    test_labels = labels[plan.parts["test"][1]]
    # Each class gives about 20% of its examples to the test split (whole groups move).
    assert all(18 <= (test_labels == c).sum() <= 26 for c in range(4))
    assert sum(plan.sizes().values()) == 400
    # Without groups the same seed cuts groups: the grouping is what keeps them whole.
    plain = plan_splits(DataSource.from_arrays(images, labels, classes=list("abcd")),
                        val_fraction=0.15, test_fraction=0.2, seed=0)
    plain_train = set(groups[plain.parts["train"][1]].tolist())
    assert plain_train & set(groups[plain.parts["test"][1]].tolist())
