# ONNX Runtime for the sam-onnx segmenter (maskgen/samonnx), included from the Makefile.
# `make onnxruntime` fetches libonnxruntime.so.1 into third_party/onnxruntime (needs npm);
# `make test` tries the same but carries on without it (the sam-onnx tests then skip).
ORT_LIB ?= third_party/onnxruntime/libonnxruntime.so.1

.PHONY: onnxruntime onnxruntime-optional

onnxruntime:
	./scripts/get-onnxruntime.sh $(dir $(ORT_LIB))

onnxruntime-optional:
	@ORT_OPTIONAL=1 ./scripts/get-onnxruntime.sh $(dir $(ORT_LIB))

test: onnxruntime-optional
