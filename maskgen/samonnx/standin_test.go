package samonnx

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/maskgen/samonnx/internal/standin"
)

// TestStandinFixturesUpToDate fails when the committed stand-in models differ from
// what the generator makes: run `go generate ./maskgen/samonnx/`.
func TestStandinFixturesUpToDate(t *testing.T) {
	for name, want := range map[string][]byte{
		"testdata/standin_encoder.onnx":         standin.Encoder(),
		"testdata/standin_decoder.onnx":         standin.Decoder(false),
		"testdata/standin_decoder_batched.onnx": standin.Decoder(true),
	} {
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `go generate ./maskgen/samonnx/`", name)
		}
		if len(got) > 64<<10 {
			t.Errorf("%s is %d bytes; fixtures should stay small", name, len(got))
		}
	}
}

func TestParamsFromConfig(t *testing.T) {
	base := configs.SAM{PointsPerSide: 32, PointsPerBatch: 64, PredIoUThresh: 0.88, StabilityScoreThresh: 0.95, StabilityScoreOffset: 1, BoxNMSThresh: 0.7}
	g, err := paramsFromConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	if !g.predIoUOn || !g.stabilityOn || g.predIoU != float32(0.88) || g.stability != float32(0.95) || g.nms != 0.7 {
		t.Errorf("params %+v", g)
	}
	off := base
	off.PredIoUThresh, off.StabilityScoreThresh = 0, 0
	if g, _ := paramsFromConfig(off); g.predIoUOn || g.stabilityOn {
		t.Errorf("zero thresholds must disable the filters (as in SAM): %+v", g)
	}
	for key, mut := range map[string]func(*configs.SAM){
		"masks.sam.points_per_side":      func(c *configs.SAM) { c.PointsPerSide = 0 },
		"masks.sam.points_per_batch":     func(c *configs.SAM) { c.PointsPerBatch = -1 },
		"masks.sam.min_mask_region_area": func(c *configs.SAM) { c.MinMaskRegionArea = 100 },
	} {
		c := base
		mut(&c)
		if _, err := paramsFromConfig(c); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %v should name the key", key, err)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		have string
		ok   bool
	}{{"1.30.0", true}, {"1.24.0", true}, {"1.24", true}, {"1.23.2", false}, {"1.9.0", false}, {"2.0.0", true}} {
		if got := versionAtLeast(c.have, "1.24"); got != c.ok {
			t.Errorf("versionAtLeast(%q, 1.24) = %v", c.have, got)
		}
	}
}
