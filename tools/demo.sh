#!/bin/sh
# make demo: fusion and folding end to end on the embedded synthetic corpus (fusekit demo):
# three sources with different tokenizers and architectures, fused, against a CLM-only
# baseline, then folded and healed; every arm's settings tuned with the same number of trials
# on the validation splits, the test splits read once at the end. Leaves out/demo/report.html.
# DEMO_ARGS adds options, e.g. DEMO_ARGS='--seeds 5 --controls' (the replicated study with its
# controls: many times longer) or DEMO_ARGS=--quick.
set -e
FK=${1:-build/fusekit}
OUT=${DEMO_OUT:-out/demo}
"$FK" demo -o "$OUT" ${DEMO_ARGS:-}
