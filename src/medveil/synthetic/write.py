"""Write a SYNTHETIC data set to disk as 8-bit grayscale PNGs in the Kaggle folder layout."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import medveil
from medveil.atomic import atomic_write, atomic_write_bytes
from medveil.errors import ConfigError, DatasetLayoutError
from medveil.synthetic import DATASETS, check_request, render_images

__all__ = ["WriteResult", "write_dataset"]

README = "README.txt"
BATCH = 64  # images rendered and written at a time: bounds memory whatever per_class is
_MARKER = "generator: medveil.synthetic.write_dataset"
_SPLITS = ("Training", "Testing")


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_dataset` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The output folder.
    counts : dict
        Split name -> class name -> number of images. The split is ``"all"`` when the data set
        was written without a test split, else ``"Training"`` and ``"Testing"``.
    """

    path: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def _readme(name: str, *, seed: int, per_class: int, size: int, test_fraction: float) -> str:
    spec = DATASETS[name]
    return (
        "SYNTHETIC IMAGES - NOT FROM ANY PATIENT, NOT FOR CLINICAL USE.\n\n"
        f"{spec.description}.\n\n"
        f"{_MARKER}\n"
        f"dataset: {name}\n"
        f"medveil version: {medveil.__version__}\n"
        f"seed: {seed}\nper_class: {per_class}\nsize: {size}\ntest_fraction: {test_fraction}\n"
        f"classes: {', '.join(spec.classes)}\n"
    )


def _check_folder(out_dir: Path, name: str) -> None:
    """Refuse a non-empty folder that is not an earlier output of this data set."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DatasetLayoutError(f"{out_dir} exists and is not a folder")
    if not any(out_dir.iterdir()):
        return
    readme = out_dir / README
    text = readme.read_text(errors="replace") if readme.is_file() else ""
    if _MARKER not in text or f"\ndataset: {name}\n" not in text:
        raise DatasetLayoutError(
            f"{out_dir} is not empty and is not an earlier output of write_dataset for {name!r}; "
            "choose an empty or new folder"
        )


def _plan(
    classes: tuple[str, ...], per_class: int, test_fraction: float
) -> list[tuple[str, int, int, int]]:
    """(folder, label, index within class, file number) of every image, class by class.

    The last images of each class form the test split: images are independent draws, so this
    is a random stratified split.
    """
    n_test = 0
    if test_fraction > 0:
        n_test = min(max(1, round(per_class * test_fraction)), per_class - 1)
    plan = []
    for label, cls in enumerate(classes):
        for index in range(per_class):
            if n_test == 0:
                plan.append((cls, label, index, index))
            elif index < per_class - n_test:
                plan.append((f"{_SPLITS[0]}/{cls}", label, index, index))
            else:
                plan.append((f"{_SPLITS[1]}/{cls}", label, index, index - (per_class - n_test)))
    return plan


def _remove_stale(out_dir: Path, classes: tuple[str, ...], keep: set[Path]) -> None:
    """Delete images of an earlier run (other arguments) that this run does not rewrite."""
    names = "|".join(map(re.escape, classes))
    # Also the temporaries (medveil.atomic's ``.<name>.<8 hex>.tmp``) of an interrupted run.
    pattern = re.compile(r"^\.?(" + names + r")-\d{5}\.png(\.[0-9a-f]{8}\.tmp)?$")
    folders = [out_dir / c for c in classes] + [out_dir / s / c for s in _SPLITS for c in classes]
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                if pattern.match(path.name) and path not in keep:
                    path.unlink()


def write_dataset(
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    per_class: int,
    size: int = 256,
    seed: int = 0,
    test_fraction: float = 0.0,
    progress: Callable[[int], object] | None = None,
) -> WriteResult:
    """Write a balanced SYNTHETIC data set as 8-bit grayscale PNGs.

    Layout: ``out_dir/<class>/<class>-00000.png``, or, when ``test_fraction > 0``,
    ``out_dir/Training/<class>/...`` and ``out_dir/Testing/<class>/...`` (stratified split).
    ``out_dir/README.txt`` says the images are synthetic and records the generator version and
    arguments. The images equal :func:`medveil.synthetic.make_dataset` with the same arguments.

    Parameters
    ----------
    name : str
        ``"brain-mri"`` or ``"ovary-us"`` (see :data:`medveil.synthetic.DATASETS`).
    out_dir : str or os.PathLike
        Output folder: new, empty, or an earlier output of this function for the same data set
        (which is then completed or overwritten; images of the earlier run that this one does
        not produce are removed).
    per_class : int
        Images per class (at least 1; at least 2 with a test split).
    size : int, default 256
        Side of the square images in pixels (at least 32).
    seed : int, default 0
        Same seed and arguments give identical files.
    test_fraction : float, default 0.0
        Share of each class put in ``Testing`` (at least one image per class when positive);
        0 writes no split.
    progress : callable, optional
        Called with the number of images written after each batch (for a progress bar).

    Returns
    -------
    WriteResult
        The folder and the number of images per split and class.

    Raises
    ------
    ConfigError
        Invalid arguments.
    DatasetLayoutError
        A non-empty ``out_dir`` that is not an earlier output of this data set (the message
        names the folder).
    """
    spec = check_request(name, per_class=per_class, size=size, seed=seed)
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if test_fraction > 0 and per_class < 2:
        raise ConfigError("a test split needs per_class of at least 2")
    out = Path(out_dir)
    _check_folder(out, name)
    out.mkdir(parents=True, exist_ok=True)
    # The README goes first, so an interrupted run is recognised and completed by a rerun.
    text = _readme(name, seed=seed, per_class=per_class, size=size, test_fraction=test_fraction)
    previous = (out / README).read_text(errors="replace") if (out / README).is_file() else None
    # Same arguments as the run that wrote the folder: its finished files are already right
    # (written whole, deterministic), so a rerun only completes what is missing.
    same_run = previous == text
    atomic_write_bytes(out / README, text.encode())

    plan = _plan(spec.classes, per_class, test_fraction)
    paths = [out / folder / f"{spec.classes[lab]}-{num:05d}.png" for folder, lab, _, num in plan]
    _remove_stale(out, spec.classes, set(paths))
    for folder in {p.parent for p in paths}:
        folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(plan), BATCH):
        batch = plan[start : start + BATCH]
        batch_paths = paths[start : start + BATCH]
        if not (same_run and all(p.is_file() for p in batch_paths)):
            images = render_images(
                name,
                labels=np.array([label for _, label, _, _ in batch]),
                indices=np.array([index for _, _, index, _ in batch]),
                size=size,
                seed=seed,
            )
            pixels = np.rint(images * 255).astype(np.uint8)
            for path, image in zip(batch_paths, pixels, strict=True):
                atomic_write(path, lambda h, im=image: Image.fromarray(im).save(h, format="PNG"))
        if progress is not None:
            progress(len(batch))
    counts: dict[str, dict[str, int]] = {}
    for folder, label, _, _ in plan:
        split = folder.split("/")[0] if "/" in folder else "all"
        per_split = counts.setdefault(split, {})
        per_split[spec.classes[label]] = per_split.get(spec.classes[label], 0) + 1
    return WriteResult(path=out, counts=counts)
