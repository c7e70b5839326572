#!/bin/sh
# build-cuda.sh [BIN] [TEST]: build the CUDA-tagged binary and the CUDA test binary
# here, without a CUDA SDK or GPU. model/cuda binds libcuda.so.1 and libcublas.so.13
# with dlopen (route B of gpu-route.md), so the link needs only -ldl; the kernels are
# the committed PTX (regenerated first when kernels.cu is newer).
#   BIN  (default bin/samdiffsr-cuda): ./cmd/samdiffsr with -tags cuda
#   TEST (default bin/cuda.test): go test -c -tags cuda ./model/cuda, the GPU checks
#        scripts/gpu-check.sh runs
set -eu
cd "$(dirname "$0")/.."
BIN=${1:-bin/samdiffsr-cuda}
TEST=${2:-bin/cuda.test}
GO=${GO:-go}
PTX=model/cuda/kernels/kernels.ptx
if [ ! -f "$PTX" ] || [ model/cuda/kernels/kernels.cu -nt "$PTX" ]; then
	./scripts/build-ptx.sh
fi
export CGO_ENABLED=1
$GO vet -tags cuda ./model/cuda/...
$GO build -tags cuda -o "$BIN" ./cmd/samdiffsr
$GO test -c -tags cuda -o "$TEST" ./model/cuda
echo "build-cuda: $BIN, $TEST ($(du -h "$TEST" | cut -f1)); on the GPU machine: scripts/gpu-check.sh" >&2
