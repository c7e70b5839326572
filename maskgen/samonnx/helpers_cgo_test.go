//go:build cgo

package samonnx

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/samdiffsr/samdiffsr/configs"
)

// testLibrary returns an ONNX Runtime library for the end-to-end tests: $ONNXRUNTIME_LIB,
// else the repository's third_party/onnxruntime/libonnxruntime.so.1 (`make onnxruntime`).
// It skips the test when there is none.
func testLibrary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(LibraryEnv); p != "" {
		return p
	}
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("no ONNX Runtime library: set ONNXRUNTIME_LIB or run `make onnxruntime` (needs npm); skipping sam-onnx runtime test")
		}
		dir = parent
	}
	p := filepath.Join(dir, "third_party", "onnxruntime", "libonnxruntime.so.1")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no ONNX Runtime library at %s and ONNXRUNTIME_LIB unset: run `make onnxruntime` (needs npm); skipping sam-onnx runtime test", p)
	}
	return p
}

// standinConfig is SAM's default generator configuration over the stand-in models.
func standinConfig(t testing.TB, batched bool) configs.SAM {
	dec := "testdata/standin_decoder.onnx"
	if batched {
		dec = "testdata/standin_decoder_batched.onnx"
	}
	return configs.SAM{
		Encoder:              "testdata/standin_encoder.onnx",
		Decoder:              dec,
		Library:              testLibrary(t),
		PointsPerSide:        32,
		PointsPerBatch:       64,
		MaskThreshold:        0,
		PredIoUThresh:        0.88,
		StabilityScoreThresh: 0.95,
		StabilityScoreOffset: 1.0,
		BoxNMSThresh:         0.7,
	}
}
