"""Discovery of image datasets in the Kaggle layout.

Two layouts are understood::

    ROOT/<class>/<files>                       -> one split, "all"
    ROOT/<Training|Testing|...>/<class>/<files> -> splits "train", "test", "val"

and, for a flat folder (a PACS export, a spreadsheet of labels), a labels file read by
:func:`scan_labels`: a CSV with a header row and the columns ``path,label`` and optionally
``split`` and ``group`` (paths relative to ROOT; splits as the folder names above; a group, e.g.
a patient, is kept on one side of every split).

Files are found recursively inside each class folder and sorted, so the order (and everything
that depends on it: shards, resumption) is the same on every run. Whatever a class folder holds
is listed, so that nothing is dropped without a word: a broken symbolic link, a link loop, a
link to a folder (never followed: it could loop), a device or pipe, or a folder named like an
image that holds no file becomes an item that the loader then reports as bad input. Hidden
names (starting with ``.``) are left out.

File names need not be valid UTF-8 (old PACS exports, Windows shares): Python keeps their
undecodable bytes as surrogate escapes; :func:`display_path` turns such a name into printable
text and :func:`path_bytes` gives back its exact bytes.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from medveil.errors import DatasetLayoutError

__all__ = [
    "IMAGE_SUFFIXES",
    "LabelRow",
    "SPLIT_ALIASES",
    "SPLIT_ORDER",
    "DatasetIndex",
    "Item",
    "display_path",
    "has_image_suffix",
    "is_valid_utf8",
    "path_bytes",
    "read_label_rows",
    "scan_dataset",
    "scan_labels",
]

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


def path_bytes(path: str | os.PathLike[str]) -> bytes:
    """The exact bytes of a file name as the operating system stores it."""
    return os.fsencode(path)


def is_valid_utf8(path: str | os.PathLike[str]) -> bool:
    """Whether the name is valid UTF-8 (so that it can be stored as text as it is)."""
    try:
        path_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def display_path(path: str | os.PathLike[str]) -> str:
    """The name as printable text: bytes that are not UTF-8 become ``\\xNN`` escapes."""
    return path_bytes(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Item:
    """One input file: ``path`` relative to the dataset root, its class index and, from a
    labels file's ``group`` column, its group (e.g. a patient; ``None`` when not given)."""

    path: Path
    label: int
    group: str | None = None


@dataclass(frozen=True)
class DatasetIndex:
    """The files of a dataset folder, by split, with class names in sorted order."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, list[Item]]
    labels_file: Path | None = None

    @property
    def layout(self) -> str:
        if self.labels_file is not None:
            return "labels-file"
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
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for p in found:
        if not is_valid_utf8(p.name):
            raise DatasetLayoutError(
                f"{display_path(p)}: folder name is not valid UTF-8; class and split names are "
                "stored as text, so rename the folder (file names inside may be anything)"
            )
    return found


def _files(folder: Path) -> list[Path]:
    """Every non-hidden entry under ``folder`` that is not a folder to descend into."""
    found: list[Path] = []

    def walk(directory: Path) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            found.append(directory)  # unreadable: the loader names the folder and the problem
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            # Never through a link: a linked folder is listed (and reported), not followed.
            if entry.is_dir(follow_symlinks=False):
                before = len(found)
                walk(path)
                if len(found) == before and has_image_suffix(path):
                    found.append(path)  # "x.png/" with nothing in it: surely not what was meant
            else:
                found.append(path)

    walk(folder)
    return sorted(found)


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


_LABEL_COLUMNS = ("label", "split", "group")


@dataclass(frozen=True)
class LabelRow:
    """One row of a labels CSV: its line number, what it names (a path, a study UID) as
    checked, its class name, split and group (``None`` when not given)."""

    line: int
    key: object
    label: str
    split: str
    group: str | None


def read_label_rows(
    labels: str | Path,
    *,
    key: str,
    check: Callable[[str, str], Hashable],
    noun: str = "files",
) -> list[LabelRow]:
    """The rows of a labels CSV whose ``key`` column names what is labelled.

    The CSV (UTF-8, a spreadsheet's byte-order mark allowed) has a header row with the columns
    ``key`` and ``label`` and optionally ``split`` (``train``/``val``/``test`` or the folder
    names of :data:`SPLIT_ALIASES`; without it everything is one split, ``all``) and ``group``
    (any text, e.g. a patient; empty cells mean no group); column names are case-insensitive.
    ``check(cell, where)`` validates a row's ``key`` cell (``where`` names the file and row for
    its error) and returns the value kept in :attr:`LabelRow.key`; ``noun`` says what the rows
    name, for the error of a file without rows. Blank lines are skipped.

    Raises
    ------
    DatasetLayoutError
        Naming the labels file and the row (its line number) for: a key listed twice, an empty
        label or split, an unknown split name, a row with the wrong number of cells, and
        whatever ``check`` refuses. Also a missing ``key``/``label`` column, an unknown column,
        or no rows at all.
    """
    labels = Path(labels).expanduser()
    try:
        text = labels.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetLayoutError(f"{labels}: labels file not found") from None
    except UnicodeDecodeError:
        raise DatasetLayoutError(f"{labels}: labels file is not UTF-8 text") from None
    except OSError as exc:
        raise DatasetLayoutError(f"{labels}: cannot read the labels file ({exc.strerror})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [cell.strip().lower() for cell in next(reader, [])]
    known = (key.lower(), *_LABEL_COLUMNS)
    unknown = [c for c in header if c not in known]
    if unknown or key.lower() not in header or "label" not in header or (
        len(set(header)) < len(header)
    ):
        raise DatasetLayoutError(
            f"{labels}: the header row must name the columns {key},label and optionally split "
            f"and group (once each), got {','.join(header) or 'nothing'}"
        )
    column = {name: header.index(name) for name in header}
    rows: list[LabelRow] = []
    seen: dict[Hashable, int] = {}
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        where = f"{labels}, row {line}"
        if len(cells) != len(header):
            raise DatasetLayoutError(
                f"{where}: {len(cells)} cells for the {len(header)} columns {','.join(header)}"
            )
        raw = cells[column[key.lower()]].strip()
        value = check(raw, where)
        if value in seen:
            raise DatasetLayoutError(f"{where}: {raw} is listed twice (also in row {seen[value]})")
        seen[value] = line
        label = cells[column["label"]].strip()
        if not label:
            raise DatasetLayoutError(f"{where}: {raw} has an empty label (no class name)")
        split = "all"
        if "split" in column:
            given = cells[column["split"]].strip()
            if given.lower() not in SPLIT_ALIASES:
                names = ", ".join(sorted(SPLIT_ALIASES))
                raise DatasetLayoutError(
                    f"{where}: unknown split {given or '(empty)'} for {raw}; use one of {names}"
                )
            split = SPLIT_ALIASES[given.lower()]
        group = cells[column["group"]].strip() if "group" in column else ""
        rows.append(LabelRow(line=line, key=value, label=label, split=split, group=group or None))
    if not rows:
        raise DatasetLayoutError(f"{labels}: the labels file lists no {noun}")
    trained = {row.label for row in rows if row.split == "train"}
    if trained:
        for row in rows:
            if row.label not in trained:
                raise DatasetLayoutError(
                    f"{labels}, row {row.line}: class {row.label} is empty in the train split "
                    f"(it has rows only in {row.split} and other held-out splits); a model "
                    "cannot learn it"
                )
    return rows


def scan_labels(root: str | Path, labels: str | Path) -> DatasetIndex:
    """Index the files a labels CSV names, relative to ``root``.

    The CSV is read by :func:`read_label_rows` with the key column ``path`` (paths relative to
    ``root``). Classes are the distinct labels, sorted. Only the files listed are read.

    Raises
    ------
    DatasetLayoutError
        As :func:`read_label_rows`, and naming the row for a path that is empty, absolute or
        leaves ``root`` (``..``), or a file that does not exist.
    """
    root = Path(root).expanduser()
    labels = Path(labels).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: no such folder (the source of the labels file)")

    def check(raw: str, where: str) -> Path:
        relative = Path(raw)
        if not raw or relative.is_absolute() or ".." in relative.parts:
            raise DatasetLayoutError(
                f"{where}: unknown path {raw or '(empty)'}: paths must be relative to {root} "
                "and stay inside it"
            )
        if not os.path.lexists(root / relative):
            raise DatasetLayoutError(f"{where}: missing file {raw} (not found in {root})")
        return relative

    rows = read_label_rows(labels, key="path", check=check)
    classes = tuple(sorted({row.label for row in rows}))
    splits = {
        split: [
            Item(path=row.key, label=classes.index(row.label), group=row.group)  # type: ignore[arg-type]
            for row in rows
            if row.split == split
        ]
        for split in sorted({row.split for row in rows}, key=SPLIT_ORDER.index)
    }
    return DatasetIndex(root=root, classes=classes, splits=splits, labels_file=labels)
