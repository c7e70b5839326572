#!/usr/bin/env bash
# Fetches the ONNX Runtime CPU shared library (libonnxruntime.so.1, linux x64) that the
# sam-onnx segmenter loads at run time, from the npm package onnxruntime-node (the
# library is inside the package tarball; `npm install` would try to download more from
# a host that is often unreachable, so we only `npm pack` and extract one file).
#
# Usage: scripts/get-onnxruntime.sh [DEST_DIR]   (default third_party/onnxruntime)
# Env:   ORT_NPM_VERSION (default 1.30.0), NPM (default npm), ORT_OPTIONAL=1 to exit 0
#        with a note when npm is missing or the fetch fails (what `make test` uses).
set -euo pipefail
dest="${1:-third_party/onnxruntime}"
version="${ORT_NPM_VERSION:-1.30.0}"
npm="${NPM:-npm}"
member="package/bin/napi-v6/linux/x64/libonnxruntime.so.1"
lib="$dest/libonnxruntime.so.1"

fail() {
  echo "get-onnxruntime: $*" >&2
  if [ "${ORT_OPTIONAL:-}" = "1" ]; then
    echo "get-onnxruntime: continuing without it (the sam-onnx tests will skip)" >&2
    exit 0
  fi
  exit 1
}

if [ -s "$lib" ]; then
  echo "get-onnxruntime: $lib already present"
  exit 0
fi
case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) fail "only linux/x86_64 is fetched automatically; set ONNXRUNTIME_LIB or masks.sam.library to a libonnxruntime >= 1.24 for $(uname -s)/$(uname -m)" ;;
esac
command -v "$npm" >/dev/null 2>&1 || fail "npm not found; install Node.js/npm, or set ONNXRUNTIME_LIB to a libonnxruntime.so >= 1.24"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "get-onnxruntime: npm pack onnxruntime-node@$version (about 110 MB)"
(cd "$tmp" && timeout 600 "$npm" pack --silent "onnxruntime-node@$version" >/dev/null) ||
  fail "npm pack onnxruntime-node@$version failed (no network or registry?)"
tgz="$(ls "$tmp"/onnxruntime-node-*.tgz 2>/dev/null | head -n1)"
[ -n "$tgz" ] || fail "npm pack produced no tarball"
tar -xzf "$tgz" -C "$tmp" "$member" || fail "$member not found in $tgz"
mkdir -p "$dest"
mv "$tmp/$member" "$lib.tmp"
mv "$lib.tmp" "$lib"
echo "get-onnxruntime: wrote $lib"
