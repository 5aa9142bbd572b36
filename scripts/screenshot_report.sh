#!/usr/bin/env bash
# Render a study's report.html in headless Chromium and save a screenshot, to check by eye that
# every figure renders, nothing overflows and the tables are legible.
#   scripts/screenshot_report.sh RUN_DIR/report.html OUT.png [WIDTH] [HEIGHT]
# Needs Debian's chromium (apt-get install chromium). The flags keep Chromium off the network.
set -euo pipefail
report=${1:?usage: screenshot_report.sh REPORT.html OUT.png [WIDTH] [HEIGHT]}
out=${2:?usage: screenshot_report.sh REPORT.html OUT.png [WIDTH] [HEIGHT]}
width=${3:-1280}
height=${4:-12000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z "$browser" ]]; then
  echo "error: Chromium not found; install it (Debian: apt-get install chromium)" >&2
  exit 2
fi
[[ -f "$report" ]] || { echo "error: $report: no such report" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" --window-size="$width,$height" \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" 2>/dev/null
# Chromium shoots the whole window: crop the empty page background below the footer.
"${PYTHON:-.venv/bin/python}" - "$out" <<'PY' || echo "(not cropped: no Python with Pillow)"
import sys
import numpy as np
from PIL import Image
path = sys.argv[1]
image = Image.open(path).convert("RGB")
pixels = np.asarray(image)
background = pixels[-1, 0]
used = np.where((pixels != background).any(axis=(1, 2)))[0]
if used.size:
    image.crop((0, 0, image.width, min(image.height, used[-1] + 24))).save(path)
print(f"cropped to {image.width}x{min(image.height, used[-1] + 24) if used.size else image.height}")
PY
echo "wrote $out"
