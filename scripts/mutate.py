#!/usr/bin/env python3
"""Curated mutation check: does the test suite fail when the code is plausibly wrong?

Each mutation below replaces one exact piece of source text (its *anchor*, which must occur
exactly once in its file) with a plausible bug: the rows of issue 19's table and more in the
stages, the obfuscator, calibration, the derivation, keys, the store, the attacks, training,
loading and the CLI. For every mutation the script copies ``src/``, ``tests/`` and ``docs/``
of this checkout into a temporary folder, applies the mutation to the copy only (the working
tree is never touched, so others may run tests in it meanwhile), and runs the test files
relevant to it with ``pytest -x -q`` against the copy (``PYTHONPATH`` points at the copy's
``src``). A mutation is

- ``killed`` when the tests fail (or time out),
- ``survived`` when they pass: a test is missing, unless the mutant is marked equivalent,
- ``error`` when its anchor is not found exactly once (the list has rotted: fix the anchor),
  or when pytest could not run the tests at all.

First the selected test files run once on the unmutated copy; the check stops if they fail.

Usage::

    python scripts/mutate.py                 # every mutation (about 6 minutes on 2 cores)
    python scripts/mutate.py --list          # the list, nothing run
    python scripts/mutate.py --only obf-skip-quantization stages-floor
    python scripts/mutate.py --timeout 600 --keep

Exit status: 0 when every non-equivalent mutant is killed and no anchor is missing, 1 otherwise.
The last score, with the command and machine, is in ``docs/TESTING.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests", "docs", "pyproject.toml", "README.md")

# Test files by area; the new value-checking files first, so that most kills come quickly.
STAGE_TESTS = (
    "tests/test_references.py", "tests/test_stages.py", "tests/test_obfuscator.py",
    "tests/test_keys.py",
)
ATTACK_TESTS = ("tests/test_attack_baselines.py", "tests/test_attacks.py")
STORE_TESTS = ("tests/test_store_values.py", "tests/test_store.py")
TRAIN_TESTS = ("tests/test_training_values.py", "tests/test_training.py")
LOAD_TESTS = ("tests/test_nifti_orientation.py", "tests/test_loading.py")
CLI_TESTS = ("tests/test_cli_values.py", "tests/test_nifti_orientation.py", "tests/test_cli.py")


@dataclass(frozen=True)
class Mutation:
    """One plausible bug: ``anchor`` (exactly once in ``path``) becomes ``replacement``."""

    name: str
    path: str
    anchor: str
    replacement: str
    tests: tuple[str, ...]
    what: str
    equivalent: str = ""  # why the mutant cannot be told apart from the original, if it can't


MUTATIONS: tuple[Mutation, ...] = (
    # --- issue 19's table ---------------------------------------------------------------------
    Mutation(
        "obf-skip-quantization", "src/medveil/obfuscator.py",
        "quantized = dequantize(codes, bits=p.bits, clip=cal.clip, dtype=x.dtype)",
        "quantized = z",
        STAGE_TESTS, "the obfuscator skips quantization",
    ),
    Mutation(
        "obf-noise-halved", "src/medveil/obfuscator.py",
        "std=p.noise * cal.clip, source=self.noise", "std=0.5 * p.noise * cal.clip, source=self.noise",
        STAGE_TESTS, "the noise standard deviation halved",
    ),
    Mutation(
        "obf-std-off-8pc", "src/medveil/obfuscator.py",
        "shift=cal.mean, scale=cal.std)", "shift=cal.mean, scale=cal.std * 1.08)",
        STAGE_TESTS, "the output standardisation's std off by 8% (at obfuscation)",
    ),
    Mutation(
        "cal-std-off-8pc", "src/medveil/calibration.py",
        "std = max((total_sq / entries - mean * mean), 0.0) ** 0.5",
        "std = 1.08 * max((total_sq / entries - mean * mean), 0.0) ** 0.5",
        STAGE_TESTS, "the output standardisation's std off by 8% (at calibration)",
    ),
    Mutation(
        "reid-not-standardised", "src/medveil/attacks/reid.py",
        "observed, plain = standardise(observed), standardise(plain)",
        "observed, plain = observed, plain",
        ATTACK_TESTS, "re-identification features not standardised per set",
    ),
    Mutation(
        "store-resumes-any-plan", "src/medveil/store/_writer.py",
        "if previous == self.plan:", "if previous is not None:",
        STORE_TESTS, "a store resumes even when its plan (inputs, key, settings) differs",
    ),
    Mutation(
        "train-best-every-epoch", "src/medveil/training/checkpoints.py",
        "    if improved:\n        _atomic_torch_save(\n            run_dir / \"best.pt\",",
        "    if improved or True:\n        _atomic_torch_save(\n            run_dir / \"best.pt\",",
        TRAIN_TESTS, "best.pt written every epoch, not only on improvement",
    ),
    Mutation(
        "derive-no-haar-signs", "src/medveil/derive.py",
        "    return q * signs\n", "    return q\n",
        STAGE_TESTS, "keyed_orthogonal without its Haar sign correction",
    ),
    Mutation(
        "load-nifti-axis-ignored", "src/medveil/loading/_nifti.py",
        "volume, options.nifti_axis))", "volume, 2))",
        LOAD_TESTS, "--nifti-axis ignored (the loader always slices axis 2)",
    ),
    Mutation(
        "load-nifti-no-reorientation", "src/medveil/loading/_nifti.py",
        "volume = apply_orientation(volume, io_orientation(image.affine))", "volume = volume",
        LOAD_TESTS, "NIfTI reorientation to RAS+ skipped",
    ),
    Mutation(
        "cli-nifti-axis-dropped", "src/medveil/cli/obfuscation.py",
        "percentile=_percentile(percentile), nifti_axis=nifti_axis,",
        "percentile=_percentile(percentile), nifti_axis=2,",
        CLI_TESTS, "obfuscate ignores --nifti-axis",
    ),
    Mutation(
        "obf-4d-transposed", "src/medveil/obfuscator.py",
        "return self.obfuscate(images[:, 0])[:, None]",
        "return self.obfuscate(images[:, 0].mT)[:, None]",
        STAGE_TESTS, "(B, 1, n, n) input transposed before obfuscation",
    ),
    Mutation(
        "cli-predict-other-class", "src/medveil/cli/training.py",
        "_text(path), _text(result.classes[int(label)]),",
        "_text(path), _text(result.classes[1 - int(label)]),",
        CLI_TESTS, "medveil predict prints the other class",
    ),
    # --- stages -------------------------------------------------------------------------------
    Mutation(
        "stages-floor", "src/medveil/stages.py",
        "return scaled.round().to(torch.int32)", "return scaled.floor().to(torch.int32)",
        STAGE_TESTS, "quantization truncates instead of rounding",
    ),
    Mutation(
        "stages-dequantize-step", "src/medveil/stages.py",
        "codes.to(dtype) * (2.0 * clip / levels) - clip",
        "codes.to(dtype) * (2.0 * clip / (levels + 1)) - clip",
        STAGE_TESTS, "dequantization with 2^b steps instead of 2^b - 1",
    ),
    Mutation(
        "stages-sign-rule", "src/medveil/stages.py",
        "idx = factor.abs().argmax(dim=-2, keepdim=True)",
        "idx = factor.argmax(dim=-2, keepdim=True)",
        STAGE_TESTS, "sign rule on the largest entry instead of the largest magnitude",
    ),
    Mutation(
        "stages-left-transposed", "src/medveil/stages.py",
        "        z = left @ z\n", "        z = left.mT @ z\n",
        STAGE_TESTS, "R_L^T applied instead of R_L",
    ),
    Mutation(
        "stages-one-iteration", "src/medveil/stages.py",
        "for _ in range(iterations - 1):", "for _ in range(iterations - 3):",
        STAGE_TESTS, "subspace iteration stops after one product",
    ),
    # --- derivation and keys ------------------------------------------------------------------
    Mutation(
        "derive-gaussian-scale", "src/medveil/derive.py",
        "derivation=derivation) / np.sqrt(rows)", "derivation=derivation) / np.sqrt(cols)",
        STAGE_TESTS, "R_R entries with variance 1/m instead of 1/k",
    ),
    Mutation(
        "derive-box-muller", "src/medveil/derive.py",
        "normals[1::2] = radius * np.sin(angle)", "normals[1::2] = radius * np.cos(angle)",
        STAGE_TESTS, "Box-Muller's second normal uses cos",
    ),
    Mutation(
        "keys-fingerprint-no-secret", "src/medveil/keys.py",
        'b"medveil/fingerprint/v1/" + self.secret + public',
        'b"medveil/fingerprint/v1/" + public',
        ("tests/test_keys.py", "tests/test_security.py"),
        "the fingerprint does not depend on the secret",
    ),
    Mutation(
        "keys-file-mode", "src/medveil/keys.py",
        "mode=0o600, exclusive=not overwrite", "mode=0o644, exclusive=not overwrite",
        ("tests/test_keys.py", "tests/test_cli.py"), "key files readable by others",
    ),
    Mutation(
        "cal-clip-percentile", "src/medveil/calibration.py",
        "clip = float(np.percentile(pooled, p.clip_percentile))",
        "clip = float(np.percentile(pooled, 99.9))",
        STAGE_TESTS, "calibration ignores the key's clip percentile",
    ),
    # --- store and obfuscation runs -----------------------------------------------------------
    Mutation(
        "obfuscate-plan-no-key", "src/medveil/obfuscate.py",
        '"classes": list(index.classes),\n        "key_fingerprint": key.fingerprint,\n',
        '"classes": list(index.classes),\n',
        STORE_TESTS, "the run's plan does not record the key",
    ),
    Mutation(
        "obfuscate-plan-no-load", "src/medveil/obfuscate.py",
        '"key_fingerprint": key.fingerprint,\n        "load": asdict(options),\n'
        '        "files_per_shard"',
        '"key_fingerprint": key.fingerprint,\n        "files_per_shard"',
        STORE_TESTS, "the run's plan does not record the load options",
    ),
    # --- attacks ------------------------------------------------------------------------------
    Mutation(
        "lba-plain-truncation", "src/medveil/attacks/lba.py",
        "return (coarse + (1 << (drop - 1))).clamp(max=(1 << bits) - 1)", "return coarse",
        ("tests/test_references.py", *ATTACK_TESTS), "dropped bits set to 0 instead of the middle of their range",
    ),
    Mutation(
        "kpl-no-intercept", "src/medveil/attacks/kpl.py",
        "- f_mean) @ weights + x_mean", "- f_mean) @ weights",
        ("tests/test_references.py", *ATTACK_TESTS), "the ridge forgets its intercept",
    ),
    Mutation(
        "pb-no-sign-alignment", "src/medveil/attacks/recovery.py",
        "signs = torch.sign((bases * ref).sum(dim=-2, keepdim=True))",
        "signs = torch.ones_like((bases * ref).sum(dim=-2, keepdim=True))",
        ("tests/test_references.py", *ATTACK_TESTS), "public basis averaged without aligning signs",
    ),
    Mutation(
        "mda-ascent", "src/medveil/attacks/mda.py",
        "x = (x - step * grad).clamp(0.0, 1.0)", "x = (x + step * grad).clamp(0.0, 1.0)",
        ATTACK_TESTS, "MDA steps up the gradient",
    ),
    Mutation(
        "mda-last-iterate", "src/medveil/attacks/mda.py",
        "better = objective < lowest", "better = objective == objective",
        ATTACK_TESTS, "MDA returns its last iterate, not its best",
    ),
    # --- training -----------------------------------------------------------------------------
    Mutation(
        "train-patience-off-by-one", "src/medveil/training/epochs.py",
        "self.bad_epochs >= patience", "self.bad_epochs > patience",
        TRAIN_TESTS, "early stopping waits one epoch too many",
    ),
)


def copy_tree(destination: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, destination / name)


def pytest_command(copy: Path, tests: tuple[str, ...]) -> list[str]:
    return [
        sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
        "--rootdir", str(copy), *tests,
    ]


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_import(copy: Path) -> None:
    """The copy's package, not the editable install of the checkout, must be the one imported."""
    out = subprocess.run(
        [sys.executable, "-c", "import medveil; print(medveil.__file__)"],
        cwd=copy, env=environment(copy), capture_output=True, text=True, check=True,
    )
    where = Path(out.stdout.strip()).resolve()
    if copy.resolve() not in where.parents:
        raise SystemExit(f"mutate: the tests would import {where}, not the copy in {copy}")


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """``(outcome, seconds, last lines)``; outcome is passed, failed, timeout or error."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            pytest_command(copy, tests), cwd=copy, env=environment(copy),
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - started, ""
    seconds = time.perf_counter() - started
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    # pytest: 0 all passed, 1 some failed, 2 interrupted (a collection error counts: the
    # mutant broke an import), 3-5 internal/usage errors and "no tests collected".
    outcome = {0: "passed", 1: "failed", 2: "failed"}.get(done.returncode, "error")
    return outcome, seconds, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="Run only these mutations.")
    parser.add_argument("--list", action="store_true", help="List the mutations and exit.")
    parser.add_argument("--timeout", type=float, default=600, help="Seconds per mutation.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary copy.")
    args = parser.parse_args()

    chosen = list(MUTATIONS)
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTATIONS})
        if unknown:
            raise SystemExit(f"mutate: unknown mutation(s): {', '.join(unknown)}")
        chosen = [m for m in MUTATIONS if m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:30s} {m.path:36s} {m.what}")
        return 0

    copy = Path(tempfile.mkdtemp(prefix="medveil-mutate-"))
    rows: list[tuple[Mutation, str, float, str]] = []
    try:
        copy_tree(copy)
        check_import(copy)
        needed = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        print(f"baseline: {len(needed)} test files on the unmutated copy in {copy}", flush=True)
        outcome, seconds, tail = run_tests(copy, needed, timeout=args.timeout * 2)
        if outcome != "passed":
            print(f"baseline {outcome} after {seconds:.0f} s; fix the tests first:\n{tail}")
            return 1
        print(f"baseline passed in {seconds:.0f} s", flush=True)
        for m in chosen:
            target = copy / m.path
            original = target.read_text() if target.is_file() else ""
            found = original.count(m.anchor)
            if found != 1:
                rows.append((m, "error", 0.0, f"anchor found {found} times in {m.path}"))
                print(f"{m.name}: error (anchor found {found} times)", flush=True)
                continue
            target.write_text(original.replace(m.anchor, m.replacement))
            try:
                outcome, seconds, tail = run_tests(copy, m.tests, timeout=args.timeout)
            finally:
                target.write_text(original)
            result = {
                "failed": "killed", "timeout": "killed (timeout)", "passed": "survived",
            }.get(outcome, "error")
            if result == "survived" and m.equivalent:
                result = "survived (equivalent)"
            rows.append((m, result, seconds, tail))
            print(f"{m.name}: {result} in {seconds:.0f} s", flush=True)
    finally:
        if args.keep:
            print(f"kept {copy}")
        else:
            shutil.rmtree(copy, ignore_errors=True)

    print()
    print(f"| {'mutation':30s} | {'file':36s} | {'result':22s} | {'s':>4s} |")
    print(f"|{'-' * 32}|{'-' * 38}|{'-' * 24}|{'-' * 6}|")
    for m, result, seconds, _ in rows:
        print(f"| {m.name:30s} | {m.path:36s} | {result:22s} | {seconds:4.0f} |")
    killed = sum(r.startswith("killed") for _, r, _, _ in rows)
    equivalent = sum(r == "survived (equivalent)" for _, r, _, _ in rows)
    bad = [(m, r, tail) for m, r, _, tail in rows if r in ("survived", "error")]
    print(f"\nkilled {killed} of {len(rows)}; equivalent {equivalent}; "
          f"survived or errors {len(bad)}")
    for m, result, tail in bad:
        print(f"  {result}: {m.name} ({m.what}); {tail.splitlines()[-1] if tail else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
