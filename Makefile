# samdiffsr — build, test, demo, bench. `make test` and `make demo` install what they
# need (OpenBLAS via apt when possible) and fall back to pure Go where they cannot.
GO      ?= go
BIN     ?= bin/samdiffsr
TAGS    ?= $(shell ./scripts/blas-tags.sh)
GOFLAGS_TAGS := $(if $(strip $(TAGS)),-tags '$(strip $(TAGS))',)
export CGO_LDFLAGS := $(if $(findstring openblas,$(TAGS)),-lopenblas,)
export TRAINTEST_BUILD_TAGS := $(strip $(TAGS))
TEST_TIMEOUT ?= 30m

.PHONY: all build test vet demo bench clean torch-optional

all: build

build:
	$(GO) build $(GOFLAGS_TAGS) -o $(BIN) ./cmd/samdiffsr

vet:
	$(GO) vet $(GOFLAGS_TAGS) ./...

test: vet torch-optional
	$(GO) test $(GOFLAGS_TAGS) -timeout $(TEST_TIMEOUT) ./...

# Debian's CPU PyTorch for the cross-check tests (they skip without it).
torch-optional:
	@./scripts/get-torch.sh

demo: build
	./scripts/demo.sh $(BIN)

bench:
	$(GO) test $(GOFLAGS_TAGS) -run '^$$' -bench . -benchtime 3x ./...

clean:
	rm -rf bin demo
-include cuda.mk
-include onnxruntime.mk
