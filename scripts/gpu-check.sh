#!/bin/bash
# gpu-check.sh: the one prepared run of issue #14 on a GPU machine (H100/H200,
# driver 580, cuBLAS 13 from the PyTorch venv's wheels, torch 2.x, no Go).
# Build here first, then run from the repository root on the GPU machine:
#     make cuda                     # bin/cuda.test and bin/samdiffsr-cuda
#     device tool: command "scripts/gpu-check.sh", carry ["bin/cuda.test", "bin/samdiffsr-cuda"]
#     (≈ 50 MB of the 64 MiB a call may carry), timeout_s 480
# The whole run stays inside BUDGET seconds (default 420): each step has a cap, shrunk to
# what is left; a step that no longer fits is skipped and says so. Expected 2-4 minutes on
# an H100 (a paper-size step is ≈ 2.4 TFLOP: U-Net fwd+bwd 1.77, RRDB features 0.63; the
# 100-step SR ≈ 100 × 4 TFLOP), plus the machine's start. Steps, most important first:
#   tests       kernels, SGEMM, conv path, allocator, the tiny U-Net and RRDB steps and the
#               100-step sampler vs the CPU backend (rel 1e-4 / 1e-3)
#   torchdump, torchcheck
#               our device step (tiny model) written as a kerneltest.TorchStep and recomputed by
#               scripts/torch_unet.py --check with torch on the GPU (RRDB features, loss, gradients)
#   bench-ours, bench-torch
#               the paper-size training step, batch 16 at 160x160, fp32 and TF32: ours
#               (BenchmarkTrainStep) and PyTorch eager (torch_unet.py --bench) in the same run
#   train-cli   the wiring: bin/samdiffsr-cuda train (model.backend cuda), 20 RRDB and 20
#               diffusion steps of the quickstart config, then sr of one LR image (10 sampler steps)
#   train       250 steps of ours with TF32 (loss must fall; stops at TRAIN_SECONDS)
#   sr-forward  one U-Net forward on a DIV2K-size image (x100 = the SR estimate), fp32 and TF32
#   conv        the paper-size 3x3 convolution fwd+bwd (TFLOP/s)
#   sr100       the full 100-step SR of one DIV2K-size image with TF32
# At the end it prints one line per row of BENCHMARKS.md's "## CUDA backend" results table.
# Logs go to $OUT (the device tool's folder) or build/gpu-check.
#
# DRY=1 (make gpu-check-dry) runs every step here without a GPU: the -tags cuda binaries
# against model/cuda/fakecuda, tiny sizes, PyTorch on the CPU. Knobs (GPU-run defaults):
# BENCH_BATCH 16, BENCH_SIZE 160, BENCH_STEPS 20, TRAIN_STEPS 250, TRAIN_SECONDS 120,
# SR_H 1352, SR_W 2040, SR_FORWARDS 3, TORCH_DEVICE cuda, CLI_STEPS 20, CLI_SR_STEPS 10,
# CLI_SECONDS 90, PY (a Python with torch).
set -u
cd "$(dirname "$0")/.." || exit 2
OUTDIR=${OUT:-build/gpu-check}
mkdir -p "$OUTDIR"
if [ "${DRY:-0}" = 1 ]; then
	: "${BENCH_BATCH:=1}" "${BENCH_SIZE:=16}" "${BENCH_STEPS:=1}" "${TRAIN_STEPS:=21}" "${TRAIN_SECONDS:=300}"
	: "${SR_H:=16}" "${SR_W:=16}" "${SR_FORWARDS:=1}" "${TORCH_DEVICE:=cpu}" "${BUDGET:=900}"
	: "${CLI_STEPS:=3}" "${CLI_SR_STEPS:=2}" "${CLI_SECONDS:=240}"
fi
BUDGET=${BUDGET:-420}
BENCH_BATCH=${BENCH_BATCH:-16}
BENCH_SIZE=${BENCH_SIZE:-160}
BENCH_STEPS=${BENCH_STEPS:-20}
TRAIN_STEPS=${TRAIN_STEPS:-250}
TRAIN_SECONDS=${TRAIN_SECONDS:-120}
SR_H=${SR_H:-1352}
SR_W=${SR_W:-2040}
SR_FORWARDS=${SR_FORWARDS:-3}
TORCH_DEVICE=${TORCH_DEVICE:-cuda}
CLI_STEPS=${CLI_STEPS:-20}
CLI_SR_STEPS=${CLI_SR_STEPS:-10}
CLI_SECONDS=${CLI_SECONDS:-90}
TEST=${TEST:-bin/cuda.test}
BIN=${BIN:-bin/samdiffsr-cuda}
DEADLINE=$(($(date +%s) + BUDGET))
FAILED=""

step() { # step NAME MAXSEC CMD...: run CMD with a timeout that fits the budget, log to $OUTDIR/NAME.txt
	local name=$1 max=$2
	shift 2
	local left=$((DEADLINE - $(date +%s) - 5))
	if [ "$left" -lt 20 ]; then
		echo "== $name: SKIPPED (budget spent)"
		FAILED="$FAILED $name(skipped)"
		return
	fi
	[ "$max" -gt "$left" ] && max=$left
	echo "== $name (limit ${max}s)"
	local t0 rc
	t0=$(date +%s)
	timeout "$max" "$@" >"$OUTDIR/$name.txt" 2>&1
	rc=$?
	grep -vE '^(=== RUN|    --- PASS|=== PAUSE|=== CONT)' "$OUTDIR/$name.txt" | tail -n 12
	echo "== $name: rc $rc in $(($(date +%s) - t0))s"
	[ "$rc" = 0 ] || FAILED="$FAILED $name(rc=$rc)"
}

skip() { # skip NAME WHY
	echo "== $1: SKIPPED ($2)"
	FAILED="$FAILED $1(skipped)"
}

# A Python that imports torch: $PY, the GPU machine's venv, python3, Debian's.
PY=$(for p in ${PY:-} /opt/torch/.venv/bin/python python3 /usr/bin/python3; do
	if "$p" -c 'import torch' >/dev/null 2>&1; then
		echo "$p"
		break
	fi
done)
export TORCH_PYTHON="$PY"

echo "== probe"
if ! gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1); then
	gpu="no nvidia-smi: $(echo "$gpu" | head -c 200)"
fi
echo "$gpu" | tee "$OUTDIR/gpu.txt"
ldd --version 2>&1 | head -1
echo "python with torch: ${PY:-none} $([ -n "$PY" ] && "$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())' 2>&1)"
SP=${SP:-$([ -n "$PY" ] && "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)}
LIBDIRS=""
while read -r f; do
	[ -n "$f" ] && LIBDIRS="$LIBDIRS:$(dirname "$f")"
done < <(find "${SP:-/nonexistent}/nvidia" -name 'libcublas.so.1*' 2>/dev/null)
echo "cuBLAS: $(find "${SP:-/nonexistent}/nvidia" -name 'libcublas.so*' 2>/dev/null | tr '\n' ' ')"
echo "libcuda: $(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')"
export LD_LIBRARY_PATH="${LIBDIRS#:}${LD_LIBRARY_PATH:+${LIBDIRS:+:}$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
if [ ! -x "$TEST" ]; then
	echo "FAIL: $TEST is missing: run 'make cuda' on the build machine and carry bin/"
	exit 2
fi
export SAMDIFFSR_CUDA_REQUIRED=1 TORCH_CHECK_REQUIRED=1
PTXAS=$(command -v ptxas || find /usr/local/cuda*/bin -name ptxas 2>/dev/null | head -1)
if [ -n "$PTXAS" ]; then
	step ptxas 30 "$PTXAS" -arch=sm_90 -v model/cuda/kernels/kernels.ptx -o /dev/null
fi

step tests 120 "$TEST" -test.v -test.count=1 -test.run 'Kernels|Gemm|ConvPath|Allocator|UNetStep|Sample|RRDBStep'

DUMP="$OUTDIR/torch-dump.safetensors"
rm -f "$DUMP"
step torchdump 60 env SAMDIFFSR_TORCH_DUMP="$DUMP" "$TEST" -test.v -test.run 'TorchDump'
if [ -z "$PY" ]; then
	skip torchcheck "no Python imports torch"
elif [ -f "$DUMP" ]; then
	step torchcheck 90 "$PY" scripts/torch_unet.py --check "$DUMP" --device "$TORCH_DEVICE"
else
	skip torchcheck "torchdump wrote no $DUMP"
fi

BENCH_ENV=(env SAMDIFFSR_BENCH_BATCH="$BENCH_BATCH" SAMDIFFSR_BENCH_SIZE="$BENCH_SIZE")
step bench-ours 150 "${BENCH_ENV[@]}" "$TEST" -test.run '^$' -test.bench 'TrainStep' -test.benchtime "${BENCH_STEPS}x" -test.v
if [ -n "$PY" ]; then
	step bench-torch 150 "$PY" scripts/torch_unet.py --bench --device "$TORCH_DEVICE" --batch "$BENCH_BATCH" \
		--size "$BENCH_SIZE" --steps "$BENCH_STEPS"
else
	skip bench-torch "no Python imports torch"
fi
# The commands on the CUDA net (worker.NewNet). configs rejects unknown SAMDIFFSR_
# variables, so SAMDIFFSR_CUDA_REQUIRED is unset for the binary.
train_cli() {
	local w="$OUTDIR/train-cli"
	rm -rf "$w"
	local -a e=(env -u SAMDIFFSR_CUDA_REQUIRED SAMDIFFSR_MODEL_BACKEND=cuda SAMDIFFSR_DATA_ROOT="$w/data/train"
		SAMDIFFSR_DATA_VAL_ROOT="$w/data/val" SAMDIFFSR_MASKS_DIR="$w/masks" SAMDIFFSR_DATA_CACHE_DIR="$w/cache"
		SAMDIFFSR_TRAIN_VAL_EVERY=0 SAMDIFFSR_TRAIN_LOG_EVERY=5)
	"${e[@]}" "$BIN" data synth --out "$w/data" --n 8 --val 1 --size 128x128 --lr &&
		"${e[@]}" "$BIN" train --config configs/quickstart.yaml --stage rrdb --steps "$CLI_STEPS" --out "$w/run" &&
		"${e[@]}" "$BIN" train --config configs/quickstart.yaml --stage diffusion --steps "$CLI_STEPS" --out "$w/run" &&
		"${e[@]}" "$BIN" sr --checkpoint "$w/run" --in "$w/data/val/LR_bicubic/X4" --out "$w/sr" --profile-steps "$CLI_SR_STEPS" &&
		grep -q 'compute backend: cuda' "$OUTDIR/train-cli.txt" && echo "train-cli: train and sr on the GPU ok"
}
if [ -x "$BIN" ]; then
	export -f train_cli
	export OUTDIR BIN CLI_STEPS CLI_SR_STEPS
	step train-cli "$CLI_SECONDS" bash -c train_cli
else
	skip train-cli "$BIN missing: make cuda"
fi

step train $((TRAIN_SECONDS + 40)) "${BENCH_ENV[@]}" SAMDIFFSR_TRAIN_STEPS="$TRAIN_STEPS" \
	SAMDIFFSR_TRAIN_SECONDS="$TRAIN_SECONDS" "$TEST" -test.v -test.run 'TrainRun'

SR_ENV=(env SAMDIFFSR_SR_H="$SR_H" SAMDIFFSR_SR_W="$SR_W")
step sr-forward 90 "${SR_ENV[@]}" "$TEST" -test.run '^$' -test.bench 'SRForward' -test.benchtime "${SR_FORWARDS}x"
step conv 60 "${BENCH_ENV[@]}" "$TEST" -test.run '^$' -test.bench 'Conv3x3' -test.benchtime "${BENCH_STEPS}x"
step sr100 200 "${SR_ENV[@]}" "$TEST" -test.run '^$' -test.bench 'SR100' -test.benchtime 1x

# metric FILE REGEX UNIT: the number before UNIT (a trailing comma ignored) on the
# first line of FILE that matches REGEX and has UNIT; "?" when none.
metric() {
	local v
	v=$(awk -v re="$2" -v u="$3" '$0 ~ re { for (i = 2; i <= NF; i++) { f = $i; sub(/,$/, "", f); if (f == u) { print $(i - 1); exit } } }' "$1" 2>/dev/null)
	echo "${v:-?}"
}
# status NAME: pass, FAIL (rc, failed tests) or "not run", from the step's log and FAILED.
status() {
	local f="$OUTDIR/$1.txt"
	case " $FAILED " in
	*" $1(skipped) "*) echo "not run (skipped)" ;;
	*" $1(rc="*)
		echo "FAIL ($(echo "$FAILED" | grep -o "$1(rc=[0-9]*)")$(grep -E '^\s*--- FAIL' "$f" 2>/dev/null | awk '{printf " %s", $3}' | head -c 300))"
		;;
	*) [ -f "$f" ] && echo "pass" || echo "not run" ;;
	esac
}
# note NAME...: " [NAME: status]" for each of the steps that did not pass.
note() {
	local n st
	for n in "$@"; do
		st=$(status "$n")
		[ "$st" = pass ] || printf ' [%s: %s]' "$n" "$st"
	done
}
L="$OUTDIR"
ours_fp32="$(metric "$L/bench-ours.txt" 'TrainStep/tf32=false' s/step) s/step, $(metric "$L/bench-ours.txt" 'TrainStep/tf32=false' samples/s) samples/s"
ours_tf32="$(metric "$L/bench-ours.txt" 'TrainStep/tf32=true' s/step) s/step, $(metric "$L/bench-ours.txt" 'TrainStep/tf32=true' samples/s) samples/s"
torch_fp32="$(metric "$L/bench-torch.txt" 'tf32=False' s/step) s/step, $(metric "$L/bench-torch.txt" 'tf32=False' samples/s) samples/s"
torch_tf32="$(metric "$L/bench-torch.txt" 'tf32=True' s/step) s/step, $(metric "$L/bench-torch.txt" 'tf32=True' samples/s) samples/s"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf " = %.2f× PyTorch'"'"'s time", a / b }'; }
train_line=$(grep -m1 '^train: .* steps, loss' "$L/train.txt" 2>/dev/null | sed 's/^train: //')
torch_line=$(grep -m1 '^torch bench:' "$L/bench-torch.txt" 2>/dev/null | sed 's/^torch bench: \([^:]*\) tf32=[A-Za-z]*:.*/\1/')
dev_line=$(grep -m1 '^cuda: device' "$L/tests.txt" 2>/dev/null | sed 's/^cuda: //')
tc="$L/torchcheck.txt"
tc_loss=$(grep -m1 -o 'loss torch .*(rel [^)]*)' "$tc" 2>/dev/null | sed 's/.*(rel \(.*\))/\1/')
tc_feat=$(grep -m1 'features vs ours' "$tc" 2>/dev/null | awk '{print $NF}')
tc_grad=$(grep -m1 -o 'worst gradient rel err [^ ]* ([^)]*) over [0-9]* tensors' "$tc" 2>/dev/null | sed 's/^worst gradient rel err //')
sz="${BENCH_BATCH} × ${BENCH_SIZE}²"

echo
echo "== results for BENCHMARKS.md (## CUDA backend), $(date -u +%Y-%m-%d), one line per row: | figure | ours | PyTorch eager |"
echo "| GPU, driver, memory | $(head -1 "$L/gpu.txt"); ${dev_line:-no device line} | ${torch_line:-?} |"
echo "| kernel / SGEMM / conv / allocator / tiny U-Net, RRDB, 100-step sampler vs the CPU backend | $(status tests) | – |"
echo "| loss, RRDB features and every U-Net gradient vs PyTorch, same weights and inputs (rel err; tol 1e-3) | $(status torchcheck): loss ${tc_loss:-?}, RRDB features ${tc_feat:-?}, worst gradient ${tc_grad:-?} | – |"
echo "| paper-size training step, batch $sz, fp32 | $ours_fp32$(ratio "$(metric "$L/bench-ours.txt" 'TrainStep/tf32=false' s/step)" "$(metric "$L/bench-torch.txt" 'tf32=False' s/step)")$(note bench-ours) | $torch_fp32$(note bench-torch) |"
echo "| same, TF32 | $ours_tf32$(ratio "$(metric "$L/bench-ours.txt" 'TrainStep/tf32=true' s/step)" "$(metric "$L/bench-torch.txt" 'tf32=True' s/step)") | $torch_tf32 |"
echo "| GPU memory of that step, TF32 (ours: allocator held; PyTorch: peak allocated) | $(metric "$L/bench-ours.txt" 'TrainStep/tf32=true' GiB-held) GiB | $(metric "$L/bench-torch.txt" 'tf32=True' GiB) GiB |"
echo "| $TRAIN_STEPS training steps, TF32, batch $sz (4 fixed batches): loss first 10 → last 10 | $(status train): ${train_line:-no train line} | – |"
echo "| samdiffsr-cuda train ($CLI_STEPS RRDB + $CLI_STEPS diffusion steps, quickstart) and sr ($CLI_SR_STEPS steps) on the GPU | $(status train-cli) | – |"
echo "| 3×3 conv 64→64, batch $sz, fwd+bwd, fp32 / TF32 | $(metric "$L/conv.txt" 'Conv3x3/tf32=false' ms/fwd+bwd) / $(metric "$L/conv.txt" 'Conv3x3/tf32=true' ms/fwd+bwd) ms, $(metric "$L/conv.txt" 'Conv3x3/tf32=false' TFLOP/s) / $(metric "$L/conv.txt" 'Conv3x3/tf32=true' TFLOP/s) TFLOP/s$(note conv) | – |"
echo "| U-Net forward on a ${SR_H}×${SR_W} image, fp32 / TF32 (×100 ≈ one SR) | $(metric "$L/sr-forward.txt" 'SRForward/tf32=false' s/forward) / $(metric "$L/sr-forward.txt" 'SRForward/tf32=true' s/forward) s$(note sr-forward) | – |"
echo "| SR of one ${SR_H}×${SR_W} image, 100 steps, TF32 (paper: 37.6 s on a V100) | $(metric "$L/sr100.txt" 'SR100' s/SR) s, $(metric "$L/sr100.txt" 'SR100' GiB-held) GiB held$(note sr100) | – |"
echo
if [ -n "$FAILED" ]; then
	echo "gpu-check: FAILED or skipped:$FAILED"
	exit 1
fi
echo "gpu-check: all steps passed"
