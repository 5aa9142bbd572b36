#!/usr/bin/env bash
# The demo: embedded synthetic data -> keys -> obfuscated stores -> a stage figure.
# Keys live in $SECRETS, apart from the outputs in $OUT; a rerun reuses both and resumes.
set -euo pipefail
OUT=${OUT:-demo-run}
SECRETS=${SECRETS:-demo-secrets}
MEDVEIL=${MEDVEIL:-.venv/bin/medveil}
mkdir -p "$OUT" && mkdir -p -m 700 "$SECRETS"

"$MEDVEIL" datasets make brain-mri -o "$OUT/data/brain-mri" --per-class 150 --test-fraction 0.2 --seed 0
"$MEDVEIL" datasets make ovary-us -o "$OUT/data/ovary-us" --per-class 150 --seed 0

for data in brain-mri ovary-us; do
  for preset in svd multistage; do
    key="$SECRETS/$data-$preset.key"
    if [[ ! -f "$key" ]]; then
      "$MEDVEIL" keygen --preset "$preset" --size 224 --rank 32 --calibrate "$OUT/data/$data" -o "$key"
    fi
    "$MEDVEIL" obfuscate "$OUT/data/$data" --key "$key" -o "$OUT/stores/$data-$preset"
  done
done
"$MEDVEIL" info "$OUT/stores/brain-mri-multistage"

brain=("$OUT"/data/brain-mri/Training/glioma/*.png)
"$MEDVEIL" show "${brain[0]}" --key "$SECRETS/brain-mri-multistage.key" -o "$OUT/figures/brain-mri-stages.png" --noise-seed 0
ovary=("$OUT"/data/ovary-us/infected/*.png)
"$MEDVEIL" show "${ovary[0]}" --key "$SECRETS/ovary-us-multistage.key" -o "$OUT/figures/ovary-us-stages.png" --noise-seed 0
echo "demo finished: stores in $OUT/stores, figures in $OUT/figures, keys in $SECRETS (keep them secret)"
