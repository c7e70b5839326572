//go:build cgo

package samonnx

import (
	"os"
	"path/filepath"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

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

// runFullDecoder runs the decoder at path on a zero embedding and one prompt at xy
// with orig_im_size (h, w), returning low_res_masks and masks.
func runFullDecoder(t *testing.T, path string, w, h int, xy [2]float32) (low, masks []float32) {
	t.Helper()
	sess, err := ort.NewDynamicAdvancedSession(path, decoderInputs, []string{"low_res_masks", "masks"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Destroy()
	mk := func(shape ort.Shape, data []float32) *ort.Tensor[float32] {
		if data == nil {
			data = make([]float32, shape.FlattenedSize())
		}
		v, err := ort.NewTensor(shape, data)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Destroy() })
		return v
	}
	in := []ort.Value{
		mk(ort.NewShape(1, 256, 64, 64), nil),
		mk(ort.NewShape(1, 2, 2), []float32{xy[0], xy[1], 0, 0}),
		mk(ort.NewShape(1, 2), []float32{1, -1}),
		mk(ort.NewShape(1, 1, 256, 256), nil),
		mk(ort.NewShape(1), []float32{0}),
		mk(ort.NewShape(2), []float32{float32(h), float32(w)}),
	}
	out := []ort.Value{nil, nil}
	if err := sess.Run(in, out); err != nil {
		t.Fatal(err)
	}
	defer out[0].Destroy()
	defer out[1].Destroy()
	lowT, masksT := out[0].(*ort.Tensor[float32]), out[1].(*ort.Tensor[float32])
	if got := masksT.GetShape(); !got.Equals(ort.NewShape(1, 4, int64(h), int64(w))) {
		t.Fatalf("masks shape %v", got)
	}
	return append([]float32(nil), lowT.GetData()...), append([]float32(nil), masksT.GetData()...)
}
