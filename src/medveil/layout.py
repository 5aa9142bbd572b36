"""Discovery of image datasets in the Kaggle layout.

Two layouts are understood::

    ROOT/<class>/<files>                       -> one split, "all"
    ROOT/<Training|Testing|...>/<class>/<files> -> splits "train", "test", "val"

Files are found recursively inside each class folder and sorted, so the order (and everything
that depends on it: shards, resumption) is the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medveil.errors import DatasetLayoutError

SPLIT_ALIASES = {
    "training": "train",
    "train": "train",
    "testing": "test",
    "test": "test",
    "validation": "val",
    "valid": "val",
    "val": "val",
}
SPLIT_ORDER = ("train", "val", "test", "all")
IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".dcm",
    ".dicom",
    ".nii",
    ".nii.gz",
)


def has_image_suffix(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(suffix) for suffix in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Item:
    """One input file: ``path`` relative to the dataset root, and its class index."""

    path: Path
    label: int


@dataclass(frozen=True)
class DatasetIndex:
    """The files of a dataset folder, by split, with class names in sorted order."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, list[Item]]

    @property
    def layout(self) -> str:
        return "class-folders" if list(self.splits) == ["all"] else "split-folders"

    def counts(self) -> dict[str, dict[str, int]]:
        """Files per class per split."""
        table: dict[str, dict[str, int]] = {}
        for split, items in self.splits.items():
            row = dict.fromkeys(self.classes, 0)
            for item in items:
                row[self.classes[item.label]] += 1
            table[split] = row
        return table

    def __len__(self) -> int:
        return sum(len(items) for items in self.splits.values())


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def scan_dataset(root: str | Path) -> DatasetIndex:
    """Index a dataset folder; raises :class:`DatasetLayoutError` explaining what is wrong.

    Every file inside a class folder is listed (unsupported ones too), so that a stray file is
    reported by the loader rather than silently ignored.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetLayoutError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: not a folder (expected class sub-folders of images)")
    top = _subdirs(root)
    loose = [p for p in root.iterdir() if p.is_file() and has_image_suffix(p)]
    split_dirs = [d for d in top if d.name.lower() in SPLIT_ALIASES]
    if split_dirs and len(split_dirs) == len(top):
        by_split = {SPLIT_ALIASES[d.name.lower()]: d for d in split_dirs}
        if len(by_split) != len(split_dirs):
            raise DatasetLayoutError(f"{root}: two folders name the same split ({split_dirs})")
        class_names = sorted({c.name for d in split_dirs for c in _subdirs(d)})
        if not class_names:
            raise DatasetLayoutError(
                f"{root}: split folders {[d.name for d in split_dirs]} contain no class folders; "
                "expected e.g. Training/<class>/<image files>"
            )
        splits = {
            split: _items(root, folder, class_names)
            for split, folder in sorted(by_split.items(), key=lambda kv: SPLIT_ORDER.index(kv[0]))
        }
    elif split_dirs:
        others = [d.name for d in top if d not in split_dirs]
        raise DatasetLayoutError(
            f"{root}: mixes split folders {[d.name for d in split_dirs]} with other folders "
            f"{others}; use either <class>/ folders or Training/<class>/ and Testing/<class>/"
        )
    elif top:
        class_names = [d.name for d in top]
        splits = {"all": _items(root, root, class_names)}
    elif loose:
        raise DatasetLayoutError(
            f"{root}: images lie directly in the folder; put them in one sub-folder per class "
            "(e.g. ROOT/glioma/*.jpg, ROOT/notumor/*.jpg)"
        )
    else:
        raise DatasetLayoutError(f"{root}: empty folder (no class sub-folders, no images)")
    for split, items in splits.items():
        if not items:
            raise DatasetLayoutError(
                f"{root}: the {split!r} split has no files in its class folders"
            )
    return DatasetIndex(root=root, classes=tuple(class_names), splits=splits)


def _items(root: Path, folder: Path, class_names: list[str]) -> list[Item]:
    items = []
    for label, name in enumerate(class_names):
        class_dir = folder / name
        if class_dir.is_dir():
            items.extend(Item(path=p.relative_to(root), label=label) for p in _files(class_dir))
    return items
