#!/usr/bin/env bash
# End-to-end demo on synthetic data with configs/quickstart.yaml (a few minutes on 2
# cores): data -> masks -> RRDB pretraining -> diffusion training (2 ranks) -> sr on
# held-out images -> eval against bicubic. Usage: scripts/demo.sh [path/to/samdiffsr]
# Everything is written under $DEMO (default demo/); a demo folder made by an earlier
# run of this script is removed first, any other one (e.g. your own quickstart run,
# whose train.out is demo/run) is left alone and the script stops.
set -euo pipefail
BIN=${1:-bin/samdiffsr}
CFG=${CFG:-configs/quickstart.yaml}
DEMO=${DEMO:-demo}
RUN=$DEMO/run
export SAMDIFFSR_LOG_LEVEL=${SAMDIFFSR_LOG_LEVEL:-warn}
# The quickstart's folders, moved under $DEMO (the same as the config's for DEMO=demo).
export SAMDIFFSR_DATA_ROOT=$DEMO/data/train SAMDIFFSR_DATA_VAL_ROOT=$DEMO/data/val \
  SAMDIFFSR_DATA_SYNTHETIC_DIR=$DEMO/data SAMDIFFSR_MASKS_DIR=$DEMO/masks SAMDIFFSR_TRAIN_OUT=$RUN
# OpenBLAS 0.3.21 does not recognise some recent CPUs and falls back to SSE3 kernels;
# name the core type for it when the user has not (tests and CI leave it alone).
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
fi

step() { printf '\n== %s\n' "$*"; }

MARK="$DEMO/.made-by-make-demo"
if [ -e "$DEMO" ] && [ ! -e "$MARK" ]; then
  echo "make demo: $DEMO exists and was not made by make demo (your own quickstart run? its train.out is demo/run);" >&2
  echo "  it is left untouched: move it away, or put the demo elsewhere: DEMO=demo-make make demo" >&2
  exit 1
fi
rm -rf "$DEMO"
mkdir -p "$DEMO"
touch "$MARK"
step "1/6 synthetic data: 24 training + 4 held-out 128x128 images"
"$BIN" data synth --out "$DEMO/data" --n 24 --val 4 --size 128x128 --seed 7

step "2-4/6 the whole job in one process tree: masks (mask farm: embedded NATS, raft coordinator, 2 workers) -> RRDB pretraining -> diffusion training, 2 ranks over the TCP ring all-reduce"
"$BIN" run --config "$CFG" --workers 2 --out "$RUN"

step "5/6 super-resolution of the held-out images (LR made with the MATLAB-compatible bicubic)"
mkdir -p "$DEMO/lr"
for f in "$DEMO"/data/val/*.png; do
  "$BIN" data downscale --in "$f" --out "$DEMO/lr/$(basename "$f")"
done
"$BIN" sr --config "$CFG" --checkpoint "$RUN" --in "$DEMO/lr" --out "$DEMO/sr" --seed 1

step "6/6 evaluation on the held-out images (PSNR-Y / SSIM-Y, crop 0 as the paper's tables)"
bic=$("$BIN" eval --baseline bicubic --data "$DEMO/data/val" --json)
rrdb=$("$BIN" eval --checkpoint "$RUN/rrdb" --data "$DEMO/data/val" --json)
diff=$("$BIN" eval --config "$CFG" --checkpoint "$RUN" --data "$DEMO/data/val" --json --save "$DEMO/eval_sr" --seed 1)
printf '  bicubic     %s\n  RRDB only   %s\n  diffusion   %s\n' "$bic" "$rrdb" "$diff"
echo "  (the diffusion model has had 1000 steps of a 16-channel U-Net, sampled with DDIM in 10 steps; it"
echo "   still scores below bicubic: the paper trains a 64-channel U-Net for 400k steps on a GPU. Minutes"
echo "   on a CPU show the pipeline and the method learning, not the paper's numbers.)"

# The bars the quickstart must meet.
get() { sed -E "s/.*\"$2\":([-0-9.eE+]+).*/\1/" <<<"$1"; }
awk -v r="$(get "$rrdb" psnr_y)" -v b="$(get "$bic" psnr_y)" 'BEGIN {
  printf "  RRDB-only PSNR-Y %.3f dB vs bicubic %.3f dB: %s\n", r, b, (r > b ? "beats bicubic" : "DOES NOT beat bicubic") }'
awk -F'[:,]' '
  /"loss":/ { l = ""; for (i = 1; i < NF; i++) { if ($i ~ /"step"/) s = $(i+1); if ($i ~ /"loss"/ && l == "") l = $(i+1); if ($i ~ /"steps"/) n = $(i+1) }
              step[++k] = s; loss[k] = l; cnt[k] = n }
  END { last = step[k]
        for (i = 1; i <= k; i++) {
          if (step[i] <= 50) { fs += loss[i] * cnt[i]; fn += cnt[i] }
          if (step[i] > last - 50) { ls += loss[i] * cnt[i]; ln += cnt[i] } }
        f = fs / fn; l = ls / ln
        printf "  diffusion loss: first 50 steps %.4f, last 50 steps %.4f: %.0f%% lower\n", f, l, 100 * (1 - l / f) }
' "$RUN/diffusion/metrics.jsonl"

# The diffusion stage's validation trend: SR PSNR-Y, the denoiser's one-step x̂0 from x_t
# made with the true x0 (the low-t end is what SR quality depends on), and the training
# loss by timestep band just before each validation.
echo "  diffusion validation trend (64-px crops of the held-out images):"
awk '
  function num(s, key,   i, r) { i = index(s, "\"" key "\":"); if (i == 0) return ""
    r = substr(s, i + length(key) + 3); sub(/[,}\]].*/, "", r); return r }
  function list(s, key, band,   i, r, o, n, k, out) { i = index(s, "\"" key "\":["); if (i == 0) return ""
    r = substr(s, i + length(key) + 4); sub(/\].*/, "", r); n = split(r, o, /\},?\{?/)
    for (k = 1; k <= n; k++) { if (o[k] == "") continue; o[k] = "{" o[k] "}"
      if (band) out = out sprintf("%s t %s-%s %.3f", (out == "" ? "" : ","), num(o[k], "from"), num(o[k], "to"), num(o[k], "loss"))
      else out = out sprintf("%s t=%s %.1f", (out == "" ? "" : ","), num(o[k], "t"), num(o[k], "psnr_y")) }
    return out }
  /"loss_by_t"/ { bands = list($0, "loss_by_t", 1) }
  /"val_psnr_y"/ { printf "    step %4d: SR %.2f dB (bicubic %.2f); x̂0 by t:%s; loss by t:%s\n",
    num($0, "step"), num($0, "val_psnr_y"), num($0, "val_bicubic_psnr_y"), list($0, "val_x0_psnr_y", 0), bands }
' "$RUN/diffusion/metrics.jsonl"

cat <<MSG

Where to look:
  run folder        $RUN/{rrdb,diffusion}/  (config.yaml, metrics.jsonl, checkpoints/)
  loss plots        $RUN/rrdb/loss.png  $RUN/diffusion/loss.png
  validation grids  $RUN/diffusion/val_*.png  (LR-bicubic | SR | HR)
  SR images         $DEMO/sr/  (from $DEMO/lr/)   evaluated SR: $DEMO/eval_sr/ (metrics.csv)
MSG
