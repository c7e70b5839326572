package checkpoints

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func sample(step int64) Checkpoint {
	return Checkpoint{
		Meta: Meta{
			Step: step, Stage: "diffusion", ConfigHash: "abc123", Modulation: "paper",
			Config:  "seed: 7\n",
			Metrics: map[string]float64{"psnr_y": 27.5, "ssim_y": 0.81},
			Extra:   map[string]string{"note": "test"},
		},
		Model: map[string]Tensor{
			"unet.conv.weight": {Shape: []int{2, 1, 3, 3}, Data: seq(18, 0.5)},
			"unet.conv.bias":   {Shape: []int{2}, Data: []float32{-1.25, float32(math.SmallestNonzeroFloat32)}},
			"rrdb.scalar":      {Shape: []int{}, Data: []float32{3}},
		},
		Optimizer: map[string]Tensor{
			"m.unet.conv.bias": {Shape: []int{2}, Data: []float32{0.1, 0.2}},
			"v.unet.conv.bias": {Shape: []int{2}, Data: []float32{0.01, 0.02}},
		},
		OptimizerMeta: map[string]string{"adam_step": "42"},
	}
}

func seq(n int, scale float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(i)*scale - 3
	}
	return out
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", SubDir, DirName(1200))
	want := sample(1200)
	if err := Save(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Model, want.Model) || !reflect.DeepEqual(got.Optimizer, want.Optimizer) {
		t.Fatalf("tensors differ after round trip:\n got %v\nwant %v", got.Model, want.Model)
	}
	if !reflect.DeepEqual(got.Meta, want.Meta) {
		t.Fatalf("meta = %+v, want %+v", got.Meta, want.Meta)
	}
	if got.OptimizerMeta["adam_step"] != "42" || got.OptimizerMeta["kind"] != "optimizer" {
		t.Fatalf("optimizer meta = %v", got.OptimizerMeta)
	}
	// Loading through the run directory and through the file finds the same checkpoint.
	for _, p := range []string{filepath.Join(dir, "..", ".."), filepath.Join(dir, ".."), filepath.Join(dir, ModelFile)} {
		c, err := Load(p)
		if err != nil {
			t.Fatalf("Load(%s): %v", p, err)
		}
		if c.Meta.Step != 1200 {
			t.Fatalf("Load(%s) step %d", p, c.Meta.Step)
		}
	}
	// No temporary folders are left behind.
	des, _ := os.ReadDir(filepath.Dir(dir))
	if len(des) != 1 {
		t.Fatalf("checkpoints folder holds %d entries, want 1", len(des))
	}
}

// TestLayoutMatchesSafetensorsSpec reads model.safetensors with nothing but the format
// spec: u64 little-endian header size N, N bytes of JSON, then the data buffer; each
// tensor entry has dtype, shape and data_offsets relative to the buffer; __metadata__
// is a string-to-string map.
func TestLayoutMatchesSafetensorsSpec(t *testing.T) {
	dir := filepath.Join(t.TempDir(), DirName(7))
	want := sample(7)
	if err := Save(dir, want); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(raw[:8])
	if 8+n > uint64(len(raw)) {
		t.Fatalf("header size %d exceeds file size %d", n, len(raw))
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+n], &header); err != nil {
		t.Fatalf("header is not a JSON object: %v", err)
	}
	buf := raw[8+n:]
	var md map[string]string
	if err := json.Unmarshal(header["__metadata__"], &md); err != nil {
		t.Fatalf("__metadata__ is not a string map: %v", err)
	}
	for _, k := range []string{"format_version", "step", "config_hash", "modulation", "metrics", "stage", "config"} {
		if _, ok := md[k]; !ok {
			t.Errorf("__metadata__ lacks %q", k)
		}
	}
	if md["step"] != "7" || md["config_hash"] != "abc123" || md["modulation"] != "paper" || md["format_version"] != FormatVersion {
		t.Errorf("__metadata__ = %v", md)
	}
	var metrics map[string]float64
	if err := json.Unmarshal([]byte(md["metrics"]), &metrics); err != nil || metrics["psnr_y"] != 27.5 {
		t.Errorf("metrics %q: %v", md["metrics"], err)
	}
	covered := make([]bool, len(buf))
	if len(header)-1 != len(want.Model) {
		t.Fatalf("header has %d tensors, want %d", len(header)-1, len(want.Model))
	}
	for name, w := range want.Model {
		var info struct {
			DType       string   `json:"dtype"`
			Shape       []int    `json:"shape"`
			DataOffsets []uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(header[name], &info); err != nil {
			t.Fatalf("tensor %s: %v", name, err)
		}
		if info.DType != "F32" {
			t.Errorf("%s dtype %q, want F32", name, info.DType)
		}
		if !reflect.DeepEqual(info.Shape, w.Shape) && !(len(info.Shape) == 0 && len(w.Shape) == 0) {
			t.Errorf("%s shape %v, want %v", name, info.Shape, w.Shape)
		}
		b, e := info.DataOffsets[0], info.DataOffsets[1]
		if e-b != uint64(4*len(w.Data)) || e > uint64(len(buf)) {
			t.Fatalf("%s offsets [%d,%d) for %d values in a %d-byte buffer", name, b, e, len(w.Data), len(buf))
		}
		for i := range w.Data {
			v := math.Float32frombits(binary.LittleEndian.Uint32(buf[b+4*uint64(i):]))
			if math.Float32bits(v) != math.Float32bits(w.Data[i]) {
				t.Fatalf("%s[%d] = %v, want %v", name, i, v, w.Data[i])
			}
		}
		for i := b; i < e; i++ {
			if covered[i] {
				t.Fatalf("%s overlaps another tensor at byte %d", name, i)
			}
			covered[i] = true
		}
	}
	for i, c := range covered {
		if !c {
			t.Fatalf("data byte %d belongs to no tensor (the buffer must be fully indexed)", i)
		}
	}
}

func TestDamagedCheckpointsAreErrorsNamingThePath(t *testing.T) {
	tests := []struct {
		name   string
		damage func(dir string) error
		want   string
	}{
		{"truncated model", func(dir string) error {
			p := filepath.Join(dir, ModelFile)
			st, _ := os.Stat(p)
			return os.Truncate(p, st.Size()-5)
		}, "damaged"},
		{"flipped byte in optimizer", func(dir string) error {
			p := filepath.Join(dir, OptimizerFile)
			b, _ := os.ReadFile(p)
			b[len(b)-1] ^= 0x40
			return os.WriteFile(p, b, 0o644)
		}, "damaged"},
		{"no manifest", func(dir string) error { return os.Remove(filepath.Join(dir, ManifestFile)) }, "not a complete checkpoint"},
		{"garbled manifest", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{not json"), 0o644)
		}, "damaged"},
		{"model removed", func(dir string) error { return os.Remove(filepath.Join(dir, ModelFile)) }, "damaged"},
		{"whole folder missing", func(dir string) error { return os.RemoveAll(dir) }, "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), DirName(5))
			if err := Save(dir, sample(5)); err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(dir); err != nil {
				t.Fatal(err)
			}
			_, err := Load(dir)
			if err == nil {
				t.Fatal("Load of a damaged checkpoint succeeded")
			}
			if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q should name %s and say %q", err, dir, tc.want)
			}
		})
	}
}

func TestLatestSkipsIncompleteAndDamaged(t *testing.T) {
	run := t.TempDir()
	root := filepath.Join(run, SubDir)
	for _, s := range []int64{100, 200, 300, 400} {
		if err := Save(filepath.Join(root, DirName(s)), sample(s)); err != nil {
			t.Fatal(err)
		}
	}
	// 400: interrupted (no manifest); 300: corrupted weights.
	os.Remove(filepath.Join(root, DirName(400), ManifestFile))
	p := filepath.Join(root, DirName(300), ModelFile)
	b, _ := os.ReadFile(p)
	b[len(b)-2] ^= 1
	os.WriteFile(p, b, 0o644)
	// A stray folder that is not a checkpoint is ignored.
	os.MkdirAll(filepath.Join(root, "notes"), 0o755)

	got, err := Latest(run)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, DirName(200)); got != want {
		t.Fatalf("Latest = %s, want %s", got, want)
	}
	c, err := Load(run)
	if err != nil || c.Meta.Step != 200 {
		t.Fatalf("Load(run) = step %v, %v", c, err)
	}

	empty := t.TempDir()
	if _, err := Latest(empty); !errors.Is(err, ErrNoCheckpoint) || !strings.Contains(err.Error(), empty) {
		t.Fatalf("Latest(empty) = %v; want ErrNoCheckpoint naming %s", err, empty)
	}
	os.RemoveAll(filepath.Join(root, DirName(100)))
	os.RemoveAll(filepath.Join(root, DirName(200)))
	if _, err := Load(run); !errors.Is(err, ErrNoCheckpoint) || !strings.Contains(err.Error(), "skipped") {
		t.Fatalf("Load(run with only damaged) = %v; want ErrNoCheckpoint listing what was skipped", err)
	}
}

func TestSaveReplacesAndPrune(t *testing.T) {
	run := t.TempDir()
	root := filepath.Join(run, SubDir)
	for _, s := range []int64{1, 2, 3} {
		if err := Save(filepath.Join(root, DirName(s)), sample(s)); err != nil {
			t.Fatal(err)
		}
	}
	c := sample(3)
	c.Meta.Metrics = map[string]float64{"psnr_y": 30}
	c.Optimizer = nil
	if err := Save(filepath.Join(root, DirName(3)), c); err != nil {
		t.Fatal(err)
	}
	got, err := Load(filepath.Join(root, DirName(3)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Meta.Metrics["psnr_y"] != 30 || got.Optimizer != nil {
		t.Fatalf("replaced checkpoint not loaded: %+v", got.Meta)
	}
	if _, err := os.Stat(filepath.Join(root, DirName(3), OptimizerFile)); !os.IsNotExist(err) {
		t.Fatal("old optimizer file survived the replacement")
	}
	os.MkdirAll(filepath.Join(root, "."+DirName(9)+".tmp-123"), 0o755)
	if err := Prune(run, 2); err != nil {
		t.Fatal(err)
	}
	es, _ := List(run)
	if len(es) != 2 || es[0].Step != 2 || es[1].Step != 3 {
		t.Fatalf("after prune: %+v", es)
	}
	des, _ := os.ReadDir(root)
	if len(des) != 2 {
		t.Fatalf("prune left %d entries (temporary folder not removed?)", len(des))
	}
}

func TestSaveRejectsBadInput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), DirName(1))
	bad := sample(1)
	bad.Model["x"] = Tensor{Shape: []int{3}, Data: []float32{1}}
	if err := Save(dir, bad); err == nil || !strings.Contains(err.Error(), "x") {
		t.Fatalf("shape/data mismatch: %v", err)
	}
	nan := sample(1)
	nan.Meta.Metrics = map[string]float64{"psnr_y": math.NaN()}
	if err := Save(dir, nan); err == nil {
		t.Fatal("NaN metric accepted")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("a failed save left a checkpoint folder")
	}
}

func TestBareSafetensorsFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), DirName(9))
	if err := Save(dir, sample(9)); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "exported.safetensors")
	b, _ := os.ReadFile(filepath.Join(dir, ModelFile))
	os.WriteFile(other, b, 0o644)
	c, err := Load(other)
	if err != nil {
		t.Fatal(err)
	}
	if c.Meta.Step != 9 || len(c.Model) != 3 || c.Optimizer != nil {
		t.Fatalf("bare file: %+v", c.Meta)
	}
	os.WriteFile(other, b[:len(b)-4], 0o644)
	if _, err := Load(other); err == nil || !strings.Contains(err.Error(), other) {
		t.Fatalf("truncated bare file: %v", err)
	}
}
