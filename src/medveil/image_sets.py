"""The disjoint image sets of a privacy evaluation: victims, known pairs and public images.

Drawn from dataset folders with a seed; an image never lands in two sets, not even as an
exact duplicate under another file name (public datasets have them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medveil.errors import ConfigError, ImageLoadError
from medveil.layout import scan_dataset
from medveil.loading import LoadOptions, load_image

__all__ = ["ImageSets", "select_images"]


@dataclass(frozen=True)
class ImageSets:
    """Disjoint image sets ``(B, n, n)`` in [0, 1] with stable ids (relative paths)."""

    victims: torch.Tensor
    victim_ids: tuple[str, ...]
    pairs: torch.Tensor
    pair_ids: tuple[str, ...]
    public: torch.Tensor
    public_ids: tuple[str, ...]
    skipped: tuple[str, ...] = ()


def _load_many(
    root: Path,
    paths: Sequence[Path],
    size: int,
    want: int,
    seen: set[str],
    groups: Mapping[str, Hashable] | None = None,
    taken: set[Hashable] | None = None,
) -> tuple[list, list, list, int]:
    """Load up to ``want`` images; returns images, ids, problems and how many paths were used.

    ``seen`` holds content hashes of images already drawn: an exact duplicate under another
    file name (public datasets have them) would otherwise sit on both sides of a split. With
    ``groups`` (relative path -> near-duplicate group), an image whose group is in ``taken`` is
    passed over too, and each drawn image's group joins ``taken``.
    """
    images, ids, skipped = [], [], []
    options = LoadOptions(size=size)
    used = 0
    for path in paths:
        if len(images) >= want:
            break
        used += 1
        group = None if groups is None else groups.get(str(path))
        if group is not None and taken is not None:
            if group in taken:
                skipped.append(f"{path}: near-duplicate of an image already drawn")
                continue
        try:
            image = load_image(root / path, options=options)
        except ImageLoadError as exc:
            skipped.append(str(exc))
            continue
        digest = hashlib.sha256(image.tobytes()).hexdigest()
        if digest in seen:
            skipped.append(f"{path}: duplicate of an image already drawn")
            continue
        seen.add(digest)
        if group is not None and taken is not None:
            taken.add(group)
        images.append(image)
        ids.append(str(path))
    return images, ids, skipped, used


def select_images(
    dataset: str | Path,
    *,
    size: int,
    victims: int,
    pairs: int,
    public: int,
    seed: int = 0,
    public_dataset: str | Path | None = None,
    groups: Mapping[str, Hashable] | None = None,
) -> ImageSets:
    """Draw disjoint victims, known pairs and public images (seeded).

    Victims and pairs come from ``dataset``; the public set from ``public_dataset`` when given
    (a different source of the same modality), else from the rest of ``dataset``. Bad files and
    exact duplicates (same pixels under another name) are passed over and listed in ``skipped``.
    ``groups`` maps relative paths of ``dataset`` to near-duplicate groups
    (:func:`medveil.duplicates.near_duplicate_groups`): then no group has an image in two sets,
    or two images in one (re-saved copies of one scan would otherwise hand an attacker the
    victim itself as a "public" image).
    """
    index = scan_dataset(dataset)
    items = [item.path for split in index.splits.values() for item in split]
    order = [items[i] for i in np.random.default_rng(seed).permutation(len(items))]
    seen: set[str] = set()
    taken: set[Hashable] = set()
    vic, vic_ids, bad1, used = _load_many(
        index.root, order, size, victims, seen, groups, taken
    )
    rest = order[used:]
    pr, pr_ids, bad2, used = _load_many(index.root, rest, size, pairs, seen, groups, taken)
    rest = rest[used:]
    if public_dataset is not None:
        pub_index = scan_dataset(public_dataset)
        pub_items = [i.path for split in pub_index.splits.values() for i in split]
        pub_order = [
            pub_items[i] for i in np.random.default_rng(seed + 1).permutation(len(pub_items))
        ]
        pub, pub_ids, bad3, _ = _load_many(pub_index.root, pub_order, size, public, seen)
        pub_ids = [f"public:{p}" for p in pub_ids]
    else:
        pub, pub_ids, bad3, _ = _load_many(index.root, rest, size, public, seen, groups, taken)
    if len(vic) < victims or len(pr) < pairs or len(pub) < public:
        raise ConfigError(
            f"{index.root}: not enough images for {victims} victims, {pairs} pairs and "
            f"{public} public images (got {len(vic)}, {len(pr)}, {len(pub)}); "
            "lower the counts or give a separate public dataset"
        )

    def stack(images: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(images)) if images else torch.zeros(0, size, size)

    return ImageSets(
        victims=stack(vic),
        victim_ids=tuple(vic_ids),
        pairs=stack(pr),
        pair_ids=tuple(pr_ids),
        public=stack(pub),
        public_ids=tuple(pub_ids),
        skipped=tuple(bad1 + bad2 + bad3),
    )
