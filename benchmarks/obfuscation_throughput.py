"""Obfuscation throughput: naive per-image NumPy loop vs medveil's batched transform, end to end.

Usage::

    .venv/bin/python benchmarks/obfuscation_throughput.py [--dataset DATASET_DIR] [--images 1024]
        [--cli-images 3000] [--cli-folder DIR] [--engines local,ray] [--rss 2000,20000]
        [--workdir /tmp/medveil-bench] [--json out.json]

Measures, in one run on one machine:

1. the naive loop: per image ``numpy.linalg.svd`` then the same stages (quantize, noise,
   projection), at n = 224, k = 32, on all cores (BLAS threads);
2. medveil's batched transform with the ``subspace`` and ``exact`` solvers, as ``obfuscate``
   runs it (one worker thread per core, each with one torch thread) and with torch's own
   threads on one batch at a time; and the accuracy of the ``subspace`` solver against the
   exact SVD;
3. the end-to-end ``obfuscate`` of a folder of 224 x 224 JPEGs (decode, resize, transform,
   write), made from the dataset's images (re-encoded, in the work folder, never in the
   repository) or from the embedded synthetic set when no dataset is given; and, when a dataset is
   given, of its original files;
4. the ``medveil obfuscate`` command as a new user runs it (a child process, start-up
   included) on a folder of ``--cli-images`` 224 x 224 JPEGs: the dataset's files resized and
   re-encoded into the work folder (``--cli-folder`` names an existing folder instead), with
   each engine of ``--engines`` and 1 and 2 workers; its wall time and peak RSS;
5. peak RSS of ``medveil obfuscate`` in a child process for folders of 2k and 20k images;
6. start-up: ``python -c "import torch"`` and ``medveil obfuscate`` on a folder of 16 images.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medveil.calibration import calibrate
from medveil.keys import generate_key
from medveil.layout import scan_dataset
from medveil.loading import LoadOptions, load_slices
from medveil.machine import describe
from medveil.obfuscate import obfuscate_dataset, torch_threads
from medveil.obfuscator import Obfuscator
from medveil.stages import truncated_svd

N, K = 224, 32


def load_images(dataset: Path | None, count: int) -> np.ndarray:
    if dataset is None:
        from medveil.synthetic import make_dataset

        images, _ = make_dataset("brain-mri", per_class=(count + 3) // 4, size=N, seed=0)
        return images[:count]
    index = scan_dataset(dataset)
    items = [i for items in index.splits.values() for i in items]
    pick = np.random.default_rng(0).choice(len(items), size=min(count, len(items)), replace=False)
    opts = LoadOptions(size=N)
    return np.stack([load_slices(index.root / items[i].path, options=opts)[0] for i in pick])


def naive_loop(images: np.ndarray, key, obfuscator: Obfuscator) -> float:
    """Seconds per image of the textbook implementation: one image at a time, full LAPACK SVD."""
    cal = key.calibration
    left, right = key.left_matrix(), key.right_matrix()
    rng = np.random.default_rng()
    levels = (1 << key.params.bits) - 1
    start = time.perf_counter()
    for x in images:
        u, s, _ = np.linalg.svd(x)
        z = u[:, :K] * s[:K]
        idx = np.abs(z).argmax(axis=0)
        z = z * np.sign(z[idx, np.arange(K)])
        q = np.round((np.clip(z, -cal.clip, cal.clip) + cal.clip) * levels / (2 * cal.clip))
        zq = q * 2 * cal.clip / levels - cal.clip
        zn = zq + rng.normal(0, key.params.noise * cal.clip, zq.shape)
        y = (left @ zn @ right - cal.mean) / cal.std
    assert y.shape == (N, N)
    return (time.perf_counter() - start) / len(images)


def batched(images: np.ndarray, obfuscator: Obfuscator, device: str, repeats: int = 3) -> float:
    """Seconds per image, one batch of 256 at a time on torch's own threads."""
    x = torch.from_numpy(images).to(device)
    obfuscator.obfuscate(x[:64])
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        for lo in range(0, len(x), 256):
            obfuscator.obfuscate(x[lo : lo + 256])
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (repeats * len(images))


def in_workers(images: np.ndarray, obfuscator: Obfuscator, workers: int, repeats: int = 3) -> float:
    """Seconds per image as ``obfuscate`` runs the transform on the CPU: ``workers`` threads,
    each with one torch thread, each on its own batches of 64."""
    x = torch.from_numpy(images)
    batches = [x[lo : lo + 64] for lo in range(0, len(x), 64)]
    with torch_threads(1), ThreadPoolExecutor(workers) as pool:
        list(pool.map(obfuscator.obfuscate, batches[:workers]))
        start = time.perf_counter()
        for _ in range(repeats):
            list(pool.map(obfuscator.obfuscate, batches))
        return (time.perf_counter() - start) / (repeats * len(images))


def accuracy(images: np.ndarray) -> dict[str, float]:
    """Subspace solver against the exact SVD (float64) on the same images."""
    x = torch.from_numpy(images)
    exact = truncated_svd(x.double(), K, solver="exact")
    fast = truncated_svd(x, K, solver="subspace")
    xd = x.double()
    res_ratio = (xd - fast.approximation().double()).norm(dim=(1, 2)) / (
        xd - exact.approximation()
    ).norm(dim=(1, 2))
    approx = (fast.approximation().double() - exact.approximation()).norm(dim=(1, 2)) / (
        exact.approximation().norm(dim=(1, 2))
    )
    col = (fast.factor.double() - exact.factor).norm(dim=1) / exact.factor.norm(dim=1)
    return {
        "residual_ratio_median": float(res_ratio.median()),
        "residual_ratio_max": float(res_ratio.max()),
        "approximation_relerr_median": float(approx.median()),
        "approximation_relerr_max": float(approx.max()),
        "factor_column_relerr_median": float(col.median()),
        "factor_first8_columns_relerr_max": float(col[:, :8].max()),
        "factor_last_column_relerr_median": float(col[:, -1].median()),
    }


def write_jpeg_folder(images: np.ndarray, folder: Path, count: int) -> Path:
    """``count`` 224 x 224 JPEGs in two class folders (cycling through ``images``)."""
    if folder.exists() and len(list(folder.rglob("*.jpg"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
    for i in range(count):
        img = Image.fromarray((images[i % len(images)] * 255).round().astype(np.uint8))
        img.save(folder / ("a" if i % 2 else "b") / f"{i:06d}.jpg", quality=90)
    return folder


def end_to_end(folder: Path, key, out: Path, device: str) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = obfuscate_dataset(folder, key=key, output=out, device=device)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    n = sum(result.images.values())
    return {"images": n, "seconds": seconds, "images_per_second": n / seconds}


def build_cli_folder(dataset: Path | None, images: np.ndarray, folder: Path, count: int) -> Path:
    """``count`` 224 x 224 JPEGs in the dataset's class folders: its files (cycled) resized and
    re-encoded, or without a dataset the synthetic ``images``."""
    if dataset is None:
        return write_jpeg_folder(images, folder, count)
    if folder.exists() and len(list(folder.rglob("*.jpg"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    index = scan_dataset(dataset)
    items = [i for items in index.splits.values() for i in items]
    for i in range(count):
        item = items[i % len(items)]
        target = folder / index.classes[item.label] / f"{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(index.root / item.path) as im:
            im.convert("RGB").resize((N, N), Image.Resampling.BILINEAR).save(target, quality=90)
    return folder


def cli_run(
    folder: Path, key_path: Path, out: Path, *, engine: str = "local", workers: int = 2
) -> dict[str, float]:
    """Run ``medveil obfuscate`` in a child process: wall seconds (start-up included), images/s
    and peak RSS (for Ray, of the driver process only).

    The peak is the child's ``VmHWM``: ``getrusage``'s ``ru_maxrss`` would not do, since Linux
    carries it over from the parent (this script, with torch and the images loaded) across
    ``exec``.
    """
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import re, sys; from medveil.cli import app;"
        "sys.argv=['medveil','obfuscate',*sys.argv[1:]];"
        "\ntry: app()\nexcept SystemExit as e: assert not e.code, e\n"
        "print(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    args = [str(folder), "--key", str(key_path), "-o", str(out), "--device", "cpu"]
    args += ["--engine", engine, "--workers", str(workers)]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    count = sum(split["count"] for split in manifest["splits"].values())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "images": count,
        "seconds": seconds,
        "images_per_second": count / seconds,
        "peak_rss_mib": int(proc.stdout.strip().splitlines()[-1]) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, help="image folder (default: synthetic images)")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--naive-images", type=int, default=256)
    parser.add_argument("--cli-images", type=int, default=3000, help="0 skips the CLI runs")
    parser.add_argument("--cli-folder", type=Path, help="run the CLI on this folder instead")
    parser.add_argument("--engines", default="local", help="'local', or 'local,ray'")
    parser.add_argument(
        "--rss", default="2000,20000", help="folder sizes for the RSS runs ('' to skip)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medveil-bench"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    report: dict[str, object] = {
        "machine": describe(),
        "torch_threads": torch.get_num_threads(),
        "dataset": str(args.dataset) if args.dataset else "embedded synthetic brain-mri",
        "n": N,
        "k": K,
    }
    images = load_images(args.dataset, args.images)
    key = calibrate(generate_key(preset="multistage", size=N, rank=K), images[:256])
    obf = Obfuscator(key)
    naive = naive_loop(images[: args.naive_images], key, obf)
    report["naive_ms_per_image"] = naive * 1e3
    for solver in ("subspace", "exact"):
        k = key.with_params(solver=solver)
        k.calibration = key.calibration
        for device in devices:
            per = batched(images, Obfuscator(k), device)
            report[f"batched_{solver}_{device}_ms_per_image"] = per * 1e3
            report[f"speedup_{solver}_{device}"] = naive / per
        per = in_workers(images, Obfuscator(k), workers=torch.get_num_threads())
        report[f"workers_{solver}_cpu_ms_per_image"] = per * 1e3
        report[f"speedup_workers_{solver}_cpu"] = naive / per
    report["subspace_accuracy"] = accuracy(images[:256])
    e2e = {}
    folder = write_jpeg_folder(images, args.workdir / f"jpeg224-{len(images)}", len(images))
    for device in devices:
        e2e[f"jpeg224_{device}"] = end_to_end(folder, key, args.workdir / "store", device)
    if args.dataset is not None:
        e2e["original_files_cpu"] = end_to_end(args.dataset, key, args.workdir / "store", "cpu")
    report["end_to_end"] = e2e
    key_path = key.save(args.workdir / "keys" / "bench.key", overwrite=True)
    # Start-up: what a run costs before its first image (the interpreter, imports, the key);
    # first, before a Ray run's processes may still be winding down.
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    import_torch = time.perf_counter() - started
    tiny = cli_run(
        write_jpeg_folder(images, args.workdir / "jpeg224-16", 16), key_path,
        args.workdir / "store-tiny",
    )
    report["startup"] = {"import_torch_seconds": import_torch, "cli_16_images_seconds": tiny["seconds"]}
    if args.cli_images:
        cli_folder = args.cli_folder or build_cli_folder(
            args.dataset, images, args.workdir / f"cli224-{args.cli_images}", args.cli_images
        )
        report["cli_folder"] = str(cli_folder)
        report["cli"] = {
            f"{engine}_{workers}": cli_run(
                cli_folder, key_path, args.workdir / "store-cli", engine=engine, workers=workers
            )
            for engine in args.engines.split(",")
            for workers in (1, 2)
        }
    sizes = [int(s) for s in args.rss.split(",") if s]
    if sizes:
        report["rss"] = {
            str(size): cli_run(
                write_jpeg_folder(images, args.workdir / f"jpeg224-{size}", size),
                key_path,
                args.workdir / "store-rss",
            )
            for size in sizes
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
