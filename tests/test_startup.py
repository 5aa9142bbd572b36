"""Start-up: `medveil --help` and `import medveil` do not load torch (about 2 s of imports)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter with this checkout's ``src`` as ``sys.argv[1]``; its
    stdout (the run must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", code, SRC], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cli_and_the_package_import_without_torch() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.argv[1:] = ['--help']\n"
        "import medveil, medveil.cli\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "try:\n    medveil.cli.app()\nexcept SystemExit as e:\n    assert not e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
        "print(medveil.__version__, medveil.Key.__name__)\n"
    )
    out = _fresh_python(code)
    assert out.splitlines()[-1] == "0.1.0 Key"
    assert "obfuscate" in out


def test_a_folder_run_does_not_load_the_dicomweb_client() -> None:
    # dicomweb-client and its HTTP stack cost about 0.4 s of every run's start-up; only a PACS
    # source needs them.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import medveil.obfuscate, medveil.calibration, medveil.cli.obfuscation\n"
        "assert 'dicomweb_client' not in sys.modules, 'loaded by the folder path'\n"
        "from medveil.dicomweb import DicomWebSource\n"
        "assert 'dicomweb_client' in sys.modules\n"
        "print(DicomWebSource.__name__)\n"
    )
    assert _fresh_python(code).strip() == "DicomWebSource"
