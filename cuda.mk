# CUDA backend (model/cuda), included from the Makefile. Nothing here runs in
# `make test`; the host-emulated kernel tests are ordinary Go tests.
#   make ptx    regenerate model/cuda/kernels/kernels.ptx from kernels.cu (clang-14, no CUDA SDK)
#   make cuda-fake-test  run the -tags cuda tests here against model/cuda/fakecuda (host stand-in)
#   make cuda   build bin/samdiffsr-cuda and bin/cuda.test with -tags cuda (no CUDA SDK or GPU needed:
#               the driver and cuBLAS are bound with dlopen at run time)
#   make gpu-check-dry  scripts/gpu-check.sh end to end here (fake driver, tiny sizes, torch on the CPU)
CUDA_BIN  ?= bin/samdiffsr-cuda
CUDA_TEST ?= bin/cuda.test

.PHONY: ptx cuda

ptx:
	./scripts/build-ptx.sh

cuda:
	./scripts/build-cuda.sh $(CUDA_BIN) $(CUDA_TEST)

# -tags cuda tests against a host stand-in for libcuda/libcublas (no GPU needed).
.PHONY: cuda-fake-test
cuda-fake-test:
	./scripts/cuda-fake-test.sh

# The same stand-in under worker: Train, checkpoints and SR through the CUDA net
# (worker.NewNet with model.backend cuda) against the CPU net.
.PHONY: cuda-fake-test-worker
cuda-fake-test: cuda-fake-test-worker
cuda-fake-test-worker:
	./scripts/cuda-fake-test.sh -run '^$$' >/dev/null
	LD_LIBRARY_PATH="$(CURDIR)/build/fakecuda$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" CUDA_TEST_REQUIRED=1 \
		$${GO:-go} test -count=1 -tags cuda -run 'CUDA|NewNet|CPUNet|Moments' ./worker

# scripts/gpu-check.sh end to end without a GPU (DRY=1): bin/cuda.test and
# bin/samdiffsr-cuda against the fakecuda stand-in, tiny sizes, PyTorch on the CPU
# (python3-torch), logs in build/gpu-check-dry. Every command of the GPU run is
# exercised, so no GPU minute goes to a shell or flag mistake. A few minutes on 2 cores.
.PHONY: gpu-check-dry
gpu-check-dry: cuda
	./scripts/cuda-fake-test.sh -run '^$$' >/dev/null
	rm -rf build/gpu-check-dry
	LD_LIBRARY_PATH="$(CURDIR)/build/fakecuda$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" DRY=1 OUT=build/gpu-check-dry \
		./scripts/gpu-check.sh
