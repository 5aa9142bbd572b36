"""A corpus of real-world oddities, built here at test time (no binary is committed), each put
through ``medveil obfuscate`` twice: strict, then with ``--skip-bad`` (issue 14).

For a bad file: the strict run exits with 2, its message names the file and the problem, and it
leaves no manifest and no half-written file; ``--skip-bad`` finishes, lists the file with its
problem in ``OUT.skipped.json`` and nowhere else. For an odd but valid file: both runs take it.
The table of outcomes is in docs/FORMATS.md ("Bad and unusual input").
"""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medveil.cli import app
from medveil.keys import generate_key
from medveil.store import ObfuscatedStore

runner = CliRunner()
CLASSES = ("alpha", "beta")


def _gradient(size: int, *, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    return (yy * 120 + xx * 80 + rng.uniform(0, 50, (size, size))).astype(np.uint8)


def _png(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: Image.fromarray(array).save(path, format="PNG")


def _truncated_jpeg(path: Path) -> None:
    Image.fromarray(_gradient(64)).save(path, format="JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _nan_tiff(path: Path) -> None:
    image = _gradient(40).astype(np.float32)
    image[5, 7] = np.nan
    Image.fromarray(image).save(path, format="TIFF")


def _huge_png(path: Path) -> None:
    """A PNG whose header claims 20000 x 20000 pixels (400 million): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 20001)) + chunk(b"IEND", b"")
    )


def _text(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


def _rgba(path: Path) -> None:
    rgba = np.dstack([_gradient(40, seed=s) for s in range(3)] + [np.full((40, 40), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(path)


def _png16(path: Path) -> None:
    Image.fromarray(_gradient(40).astype(np.uint16) * 250).save(path)


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


@dataclass(frozen=True)
class Case:
    """One corpus entry: a file ``name`` (bytes: need not be UTF-8) in ``alpha/``."""

    id: str
    name: bytes
    build: Callable[[Path], None]
    problem: str | None  # regex of the problem, or None: the file is accepted
    size: int = 32  # the working size n of the key
    options: tuple[str, ...] = ()
    upscaled: int = 0  # accepted files only: images upscaled to n


CORPUS = [
    Case("truncated-jpeg", b"cut.jpg", _truncated_jpeg,
         r"cannot read the image \(image file is truncated"),
    Case("empty-file", b"empty.png", _text(b""), r"file is empty"),
    Case("text-named-png", b"notes.png", _text(b"hello, not an image\n"),
         r"not an image \(its content is not PNG, JPEG, TIFF or BMP"),
    Case("8x8-image", b"tiny.png", _png(_gradient(8)), None, upscaled=1),
    Case("200x200-at-224", b"small.png", _png(_gradient(200)), None, size=224, upscaled=1),
    Case("200x200-at-224-min-size", b"small.png", _png(_gradient(200)),
         r"image is 200x200 pixels, smaller than the minimum size 224x224 \(--min-size\)",
         size=224, options=("--min-size", "224")),
    Case("constant-image", b"flat.png", _png(np.full((40, 40), 7, np.uint8)),
         r"the image is constant \(a single value\)"),
    Case("nan-float-tiff", b"nan.tif", _nan_tiff, r"contains NaN or infinite values"),
    Case("rgba-png", b"rgba.png", _rgba, None),
    Case("16-bit-png", b"deep.png", _png16, None),
    Case("20000x20000-png", b"huge.png", _huge_png,
         r"refused by Pillow's decompression-bomb check: Image size \(400000000 pixels\)"),
    Case("fake-dicom", b"scan.dcm", _text(b"not a DICOM file\n" * 20),
         r"DICOM file has no pixel data \(or is not a DICOM file\)"),
    Case("fake-nifti", b"brain.nii.gz", _text(gzip.compress(b"not a NIfTI header" * 30)),
         r"not a NIfTI file \(no valid NIfTI-1 or NIfTI-2 header\)"),
    Case("unsupported-gif", b"anim.gif", _text(b"GIF89a\x01\x00\x01\x00"),
         r"unsupported file type '\.gif'"),
    Case("folder-named-png", b"x.png", lambda path: path.mkdir(),
         r"is a folder, not an image file"),
    Case("non-utf8-name", b"caf\xe9-\xff.png", _png(_gradient(40)), None),
    Case("broken-symlink", b"gone.png", _symlink("nowhere.png"),
         r"broken symbolic link \(its target nowhere\.png does not exist\)"),
    Case("symlink-loop", b"loop.png", _symlink("loop.png"),
         r"symbolic link loop \(following the link leads back to itself\)"),
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("keys")
    out = {}
    for size in (32, 224):
        out[size] = generate_key(preset="svd", size=size, rank=4).save(folder / f"k{size}.key")
    return out


def _dataset(root: Path, case: Case) -> Path:
    """Two good 240x240 images a class (never upscaled), and the case's file in ``alpha/``."""
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(_gradient(240, seed=10 * c + i)).save(root / name / f"good-{i}.png")
    case.build(Path(os.fsdecode(os.fsencode(root / "alpha") + b"/" + case.name)))
    return root


def _obfuscate(data: Path, key: Path, out: Path, *options: str):
    return runner.invoke(
        app, ["obfuscate", str(data), "--key", str(key), "-o", str(out), "--device", "cpu",
              "--files-per-shard", "2", *options],
    )


def _assert_nothing_half_written(out: Path) -> None:
    """No manifest, no temporary, no lock; every shard on disk is whole and matches its mark."""
    assert not (out / "manifest.json").exists()
    assert not list(out.rglob("*.tmp")) and not (out / ".medveil.lock").exists()
    for mark in out.rglob("shard-*.json"):
        stem = mark.stem.split("-")[1]
        count = json.loads(mark.read_text())["count"]
        assert len(np.load(mark.with_name(f"images-{stem}.npy"))) == count
        assert len(np.load(mark.with_name(f"labels-{stem}.npy"))) == count
    for array in out.rglob("*.npy"):
        assert array.with_name(f"shard-{array.stem.split('-')[1]}.json").is_file(), array


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_corpus(tmp_path: Path, keys: dict[int, Path], case: Case) -> None:
    data = _dataset(tmp_path / "data", case)
    shown = "alpha/" + case.name.decode("utf-8", "backslashreplace")
    strict = _obfuscate(data, keys[case.size], tmp_path / "strict", *case.options)
    lenient = _obfuscate(data, keys[case.size], tmp_path / "lenient", "--skip-bad", *case.options)
    assert lenient.exit_code == 0, lenient.output
    report = tmp_path / "lenient.skipped.json"
    if case.problem is None:
        assert strict.exit_code == 0, strict.output
        for out in ("strict", "lenient"):
            store = ObfuscatedStore(tmp_path / out)
            assert len(store.split("all")) == 5
            assert store.manifest["splits"]["all"]["upscaled"] == case.upscaled
        assert not report.exists()
        return
    assert strict.exit_code == 2, strict.output
    message = " ".join(strict.output.split())
    assert re.search(re.escape(f"error: {shown}: ") + case.problem, message), message
    _assert_nothing_half_written(tmp_path / "strict")
    listed = json.loads(report.read_text())["skipped"]
    assert [entry["path"] for entry in listed] == [shown]
    assert re.fullmatch(case.problem + ".*", listed[0]["problem"])
    store = ObfuscatedStore(tmp_path / "lenient")
    assert len(store.split("all")) == 4 and store.manifest["splits"]["all"]["skipped"] == 1


def test_a_non_utf8_name_is_stored_exactly_with_keep_names(tmp_path, keys):
    case = next(c for c in CORPUS if c.id == "non-utf8-name")
    data = _dataset(tmp_path / "data", case)
    assert _obfuscate(data, keys[32], tmp_path / "out", "--keep-names").exit_code == 0
    names = ObfuscatedStore(tmp_path / "out").names("all")
    assert os.fsencode(names[0]) == b"alpha/" + case.name


# --- key files (issue 14, items 3 and 4; keys.py) ----------------------------------------------


def _key_case(tmp_path: Path, keys: dict[int, Path], damage: Callable[[Path], None]):
    key = tmp_path / "site.key"
    key.write_bytes(keys[32].read_bytes())
    key.chmod(0o600)
    damage(key)
    data = _dataset(tmp_path / "data", Case("good", b"extra.png", _png(_gradient(40)), None))
    result = _obfuscate(data, key, tmp_path / "out", "--skip-bad")
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert not (tmp_path / "out.skipped.json").exists()
    return result, " ".join(result.output.split()), key


def test_a_world_readable_key_is_refused_with_the_fix(tmp_path, keys):
    result, message, key = _key_case(tmp_path, keys, lambda k: k.chmod(0o644))
    assert result.exit_code == 2
    assert f"error: {key}: key file permissions 0644 are too open" in message
    assert f"chmod 600 {key}" in message


def test_a_tampered_key_is_refused_as_damaged(tmp_path, keys):
    def tamper(key: Path) -> None:
        data = json.loads(key.read_text())
        flipped = int(data["secret"][0], 16) ^ 1
        data["secret"] = f"{flipped:x}" + data["secret"][1:]
        key.write_text(json.dumps(data))

    result, message, key = _key_case(tmp_path, keys, tamper)
    assert result.exit_code == 2
    assert f"error: {key}: the key file is damaged" in message
