#!/bin/bash
# gpu-check.sh: the one prepared run of issue #8 on a GPU machine (H100/H200,
# driver 580, cuBLAS 13 from the PyTorch venv's wheels, no Go). Build here first:
#     make cuda          # bin/cuda.test (and bin/samdiffsr-cuda)
# then run from the repository root on the GPU machine, carrying bin/:
#     scripts/gpu-check.sh            (device tool: carry ["bin"], timeout_s ≈ 580)
# Steps, most important first, each capped so the whole run ends within BUDGET
# seconds (default 540); a step that no longer fits is skipped and says so:
#   1. probe: GPU, driver, glibc, where libcublas.so.13 is; ptxas on our PTX if nvcc is there
#   2. kernels, SGEMM, conv path, allocator, the tiny U-Net and RRDB steps and the 100-step sampler vs the
#      CPU backend (rel 1e-4 / 1e-3)
#   2b. the wiring: bin/samdiffsr-cuda train (model.backend cuda) for 20 RRDB and 20 diffusion steps of
#      the quickstart config on synthetic data, then sr of one LR image (10 sampler steps) on the GPU
#   3. PyTorch cross-check: our device step's loss and gradients vs torch on the same weights
#   4. step time, paper-size model, batch 16 at 160x160: ours (fp32, 20 steps) and PyTorch eager (fp32 and TF32)
#   5. 250 training steps of ours with TF32 (loss must fall; stops at 170 s), samples/s, memory
#   6. one U-Net forward on a DIV2K-size image (x100 = the SR estimate), then the full
#      100-step SR of one DIV2K-size image with TF32 if the budget still allows
# Results go to $OUT (the device tool's folder) or build/gpu-check; the end prints the lines for BENCHMARKS.md.
set -u
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-build/gpu-check}
mkdir -p "$OUTDIR"
BUDGET=${BUDGET:-540}
DEADLINE=$(($(date +%s) + BUDGET))
SP=${SP:-/opt/torch/.venv/lib/python3.12/site-packages}
PY=${PY:-/opt/torch/.venv/bin/python}
[ -x "$PY" ] || PY=python3
TEST=${TEST:-bin/cuda.test}
BIN=${BIN:-bin/samdiffsr-cuda}
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
	local t0=$(date +%s)
	timeout "$max" "$@" >"$OUTDIR/$name.txt" 2>&1
	local rc=$?
	grep -vE '^(=== RUN|    --- PASS|=== PAUSE|=== CONT)' "$OUTDIR/$name.txt" | tail -n 40
	echo "== $name: rc $rc in $(($(date +%s) - t0))s"
	[ "$rc" = 0 ] || FAILED="$FAILED $name(rc=$rc)"
}

echo "== probe"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUTDIR/gpu.txt"
ldd --version 2>&1 | head -1
LIBDIRS=""
for f in $(find "$SP/nvidia" -name 'libcublas.so.1*' 2>/dev/null) $(find "$SP/nvidia" -name 'libnvrtc.so*' 2>/dev/null); do
	LIBDIRS="$LIBDIRS:$(dirname "$f")"
done
echo "cuBLAS: $(find "$SP/nvidia" -name 'libcublas.so*' 2>/dev/null | tr '\n' ' ')"
echo "libcuda: $(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')"
export LD_LIBRARY_PATH="${LIBDIRS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SAMDIFFSR_CUDA_REQUIRED=1
if [ ! -x "$TEST" ]; then
	echo "FAIL: $TEST is missing: run 'make cuda' on the build machine and carry bin/"
	exit 2
fi
PTXAS=$(command -v ptxas || ls /usr/local/cuda*/bin/ptxas 2>/dev/null | head -1)
if [ -n "$PTXAS" ]; then
	step ptxas 30 "$PTXAS" -arch=sm_90 -v model/cuda/kernels/kernels.ptx -o /dev/null
fi

step tests 150 "$TEST" -test.v -test.count=1 -test.run 'Kernels|Gemm|ConvPath|Allocator|UNetStep|Sample|RRDBStep'

# The commands on the CUDA net (worker.NewNet). configs rejects unknown SAMDIFFSR_
# variables, so SAMDIFFSR_CUDA_REQUIRED is unset for the binary.
train_cli() {
	local w="$OUTDIR/train-cli"
	rm -rf "$w"
	local -a e=(env -u SAMDIFFSR_CUDA_REQUIRED SAMDIFFSR_MODEL_BACKEND=cuda SAMDIFFSR_DATA_ROOT="$w/data/train"
		SAMDIFFSR_DATA_VAL_ROOT="$w/data/val" SAMDIFFSR_MASKS_DIR="$w/masks" SAMDIFFSR_DATA_CACHE_DIR="$w/cache"
		SAMDIFFSR_TRAIN_VAL_EVERY=0 SAMDIFFSR_TRAIN_LOG_EVERY=5)
	"${e[@]}" "$BIN" data synth --out "$w/data" --n 8 --val 1 --size 128x128 --lr &&
		"${e[@]}" "$BIN" train --config configs/quickstart.yaml --stage rrdb --steps 20 --out "$w/run" &&
		"${e[@]}" "$BIN" train --config configs/quickstart.yaml --stage diffusion --steps 20 --out "$w/run" &&
		"${e[@]}" "$BIN" sr --checkpoint "$w/run" --in "$w/data/val/LR_bicubic/X4" --out "$w/sr" --profile-steps 10 &&
		grep -q 'compute backend: cuda' "$OUTDIR/train-cli.txt" && echo "train: cli on the GPU ok"
}
if [ -x "$BIN" ]; then
	export -f train_cli
	export OUTDIR BIN
	step train-cli 90 bash -c train_cli
else
	echo "== train-cli: SKIPPED ($BIN missing: make cuda)"
	FAILED="$FAILED train-cli(skipped)"
fi

DUMP="$OUTDIR/torch-dump.safetensors"
step torchdump 60 env SAMDIFFSR_TORCH_DUMP="$DUMP" "$TEST" -test.v -test.run 'TorchDump'
if [ -f "$DUMP" ]; then
	step torchcheck 120 "$PY" scripts/torch_unet.py --check "$DUMP"
fi

step bench-ours 150 "$TEST" -test.run '^$' -test.bench 'TrainStep/tf32=false' -test.benchtime 20x -test.v
step bench-torch 150 "$PY" scripts/torch_unet.py --bench --batch 16 --size 160 --steps 20
step train200 200 env SAMDIFFSR_TRAIN_STEPS=${TRAIN_STEPS:-250} SAMDIFFSR_TRAIN_SECONDS=170 "$TEST" -test.v -test.run 'TrainRun'
step conv 60 "$TEST" -test.run '^$' -test.bench 'Conv3x3' -test.benchtime 20x
step sr 120 "$TEST" -test.run '^$' -test.bench 'SRForward' -test.benchtime 3x
step sr100 200 "$TEST" -test.run '^$' -test.bench 'SR100' -test.benchtime 1x

echo
echo "== results for BENCHMARKS.md (## CUDA backend), GPU: $(head -1 "$OUTDIR/gpu.txt")"
grep -hE '^(Benchmark|torch (bench|check)|train: [^s])|^(--- FAIL|FAIL|ok )' "$OUTDIR"/*.txt 2>/dev/null | sed 's/^/    /'
if [ -n "$FAILED" ]; then
	echo "gpu-check: FAILED or skipped:$FAILED"
	exit 1
fi
echo "gpu-check: all steps passed"
