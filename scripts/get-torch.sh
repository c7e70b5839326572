#!/usr/bin/env bash
# Installs Debian's python3-torch (CPU) when it is missing and we may (root,
# apt-get present), so that the PyTorch cross-checks in `make test` run
# (model/cuda/kerneltest TestTorchCheckCPU, cmd/samdiffsr TestCheckpointsImportTorch).
# Never fails: without torch those tests skip with a message. SAMDIFFSR_NO_TORCH=1
# skips the install.
set -u
have_torch() { /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; }
if [ "${SAMDIFFSR_NO_TORCH:-}" = "1" ] || have_torch; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "get-torch: apt-get install python3-torch (CPU PyTorch for the cross-checks; a few minutes once)" >&2
  { DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q python3-torch ||
    { timeout 300 apt-get update -q && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q python3-torch; }; } >/dev/null 2>&1 || true
fi
if have_torch; then
  echo "get-torch: $(/usr/bin/python3 -c 'import torch; print("torch", torch.__version__)')" >&2
else
  echo "get-torch: no PyTorch here; the PyTorch cross-check tests will skip" >&2
fi
exit 0
