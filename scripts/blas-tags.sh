#!/usr/bin/env bash
# Prints the Go build tags for the fastest BLAS this machine can link, installing
# OpenBLAS with apt when it is missing and we may (root, apt-get present). Never fails:
# with no OpenBLAS it prints nothing and the pure-Go gonum BLAS is used.
set -u
have_openblas() {
  [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] || [ -e /usr/lib/aarch64-linux-gnu/libopenblas.so ] ||
    ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so '
}
if [ "${SAMDIFFSR_NO_BLAS:-}" = "1" ]; then exit 0; fi
if ! have_openblas && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { timeout 300 apt-get install -y -q libopenblas-dev ||
    { timeout 300 apt-get update -q && timeout 300 apt-get install -y -q libopenblas-dev; }; } >&2 2>/dev/null || true
fi
if have_openblas && command -v gcc >/dev/null 2>&1; then
  echo openblas
fi
