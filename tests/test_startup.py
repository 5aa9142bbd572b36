"""Start-up: `medveil --help` and `import medveil` do not load torch (about 2 s of imports)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_the_cli_and_the_package_import_without_torch() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.argv[1:] = ['--help']\n"
        "import medveil, medveil.cli\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "try:\n    medveil.cli.app()\nexcept SystemExit as e:\n    assert not e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
        "print(medveil.__version__, medveil.Key.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, SRC], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0.1.0 Key"
    assert "obfuscate" in done.stdout
