#!/bin/sh
# build-ptx.sh [OUT]: compile model/cuda/kernels/kernels.cu to PTX (sm_80, PTX 7.0;
# JIT-compiled by the driver on newer GPUs such as the H100) with clang-14 and no
# CUDA SDK, installing clang-14 with apt when it is missing. Writes OUT (default
# model/cuda/kernels/kernels.ptx), first line a comment naming the clang version,
# which the kernels package's test uses to check that the committed PTX is current.
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-model/cuda/kernels/kernels.ptx}
CLANG=${CLANG_CUDA:-clang-14}
if ! command -v "$CLANG" >/dev/null 2>&1; then
	SUDO=""
	[ "$(id -u)" = 0 ] || SUDO="sudo"
	echo "build-ptx: installing clang-14" >&2
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y clang-14 >&2 ||
		{ $SUDO apt-get update >&2 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y clang-14 >&2; }
fi
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
"$CLANG" -x cuda --cuda-device-only --cuda-gpu-arch=sm_80 -nocudainc -nocudalib -O3 -S \
	-o "$TMP" model/cuda/kernels/kernels.cu
{
	echo "// $("$CLANG" --version | head -1) from kernels.cu: scripts/build-ptx.sh (do not edit)"
	cat "$TMP"
} >"$OUT"
echo "build-ptx: wrote $OUT ($(grep -c '^\.visible \.entry' "$OUT") kernels)" >&2
