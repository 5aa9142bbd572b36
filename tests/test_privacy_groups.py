"""Victims, known pairs and public images never share a near-duplicate group."""

from __future__ import annotations

from collections import Counter

from medveil.layout import scan_dataset
from medveil.privacy import select_images
from medveil.synthetic.write import write_dataset


def test_no_group_is_drawn_twice(tmp_path):
    data = write_dataset("ovary-us", tmp_path / "data", per_class=20, size=32).path
    paths = sorted(str(item.path) for split in scan_dataset(data).splits.values() for item in split)
    # Pretend every three consecutive files are re-saved copies of one scan.
    groups = {path: i // 3 for i, path in enumerate(paths)}
    sets = select_images(
        data, size=32, victims=4, pairs=4, public=5, seed=0, groups=groups
    )
    drawn = [*sets.victim_ids, *sets.pair_ids, *sets.public_ids]
    assert len(drawn) == 13
    counts = Counter(groups[i] for i in drawn)
    assert max(counts.values()) == 1
    near = [s for s in sets.skipped if "near-duplicate" in s]
    assert near, "with 40 files in groups of 3, drawing 13 must pass over some copies"
    # Without groups the same seed draws some group twice.
    plain = select_images(data, size=32, victims=4, pairs=4, public=5, seed=0)
    ids = [*plain.victim_ids, *plain.pair_ids, *plain.public_ids]
    assert max(Counter(groups[i] for i in ids).values()) > 1
