#!/usr/bin/env bash
# Time the README's first quick-start command on a fresh clone: `make demo`, which creates the
# virtual environment, installs medveil and runs `medveil study --quick` on the embedded data.
#   benchmarks/study_quick.sh [REPO_URL_OR_PATH]     (default: this checkout's committed HEAD)
# Prints the wall time of the set-up and of the whole command, and the study's own step times.
# With KEEP_RUN=DIR the run folder (demo-run/, with report.html) is copied to DIR before the
# clone is removed, e.g. for scripts/screenshot_report.sh.
# Run it on a quiet machine: other CPU-heavy processes slow torch's threads down several-fold.
set -euo pipefail
source_repo=${1:-$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$source_repo" "$work/medveil"
cd "$work/medveil"
start=$(date +%s.%N)
make .venv/.installed-stamp > setup.log 2>&1
setup_done=$(date +%s.%N)
make demo > demo.log 2>&1
end=$(date +%s.%N)
if [[ -n "${KEEP_RUN:-}" ]]; then
  rm -rf "$KEEP_RUN" && cp -r demo-run "$KEEP_RUN"
fi
python3 - "$start" "$setup_done" "$end" <<'PY'
import json, sys
from pathlib import Path
start, setup, end = (float(v) for v in sys.argv[1:])
steps = json.loads(Path("demo-run/steps.json").read_text())
machine = json.loads(Path("demo-run/study.json").read_text())["machine"]
print(f"machine: {machine}")
print(f"set-up (venv + pip install): {setup - start:.0f} s")
print(f"study --quick: {end - setup:.0f} s  ({', '.join(f'{k} {v:.0f} s' for k, v in steps.items())})")
print(f"make demo in all: {end - start:.0f} s")
PY
