#!/bin/sh
# make demo: fusion and folding end to end on the embedded synthetic corpus (fusekit demo):
# three sources with different tokenizers and architectures, fused, against a CLM-only
# baseline, then folded and healed. About 3 minutes on 2 cores; leaves out/demo/report.html.
set -e
FK=${1:-build/fusekit}
OUT=${DEMO_OUT:-out/demo}
"$FK" demo -o "$OUT" ${DEMO_ARGS:-}
