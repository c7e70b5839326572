#!/usr/bin/env bash
# bench-method.sh: the method ablation of BENCHMARKS.md (issue 17) — modulations none,
# reference and paper trained from one seed, config (configs/method_bench.yaml) and
# data (crops of ../shared/data/photos, cut at run time) to three budgets, sampled with
# DDPM and DDIM. About 20 minutes on 2 cores. Usage:
#   scripts/bench-method.sh [path/to/samdiffsr]     (env: PHOTOS, OUT, BUDGETS, DDIM_STEPS)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-bin/samdiffsr}
PHOTOS=${PHOTOS:-../shared/data/photos}
OUT=${OUT:-build/bench-method}
BUDGETS=${BUDGETS:-300,1000,2000}
DDIM_STEPS=${DDIM_STEPS:-10}
if [ ! -d "$PHOTOS" ]; then
  echo "bench-method: no photos at $PHOTOS (set PHOTOS to a folder of 8 or more photographs)" >&2
  exit 2
fi
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
fi
export SAMDIFFSR_LOG_LEVEL=${SAMDIFFSR_LOG_LEVEL:-warn}
rm -rf "$OUT"
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $BIN bench method --config configs/method_bench.yaml --photos $PHOTOS --out $OUT --budgets $BUDGETS --ddim-steps $DDIM_STEPS"
start=$(date +%s)
"$BIN" bench method --config configs/method_bench.yaml --photos "$PHOTOS" --out "$OUT" --budgets "$BUDGETS" --ddim-steps "$DDIM_STEPS"
echo "# $(( $(date +%s) - start )) s in all; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
