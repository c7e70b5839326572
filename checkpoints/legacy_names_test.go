package checkpoints

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLegacyName(t *testing.T) {
	for _, c := range []struct {
		in, want string
		legacy   bool
	}{
		{"denoise_fn.ups.0.2.conv.weight", "denoise_fn.ups.0.2.conv.0.weight", true},
		{"denoise_fn.ups.12.2.conv.bias", "denoise_fn.ups.12.2.conv.0.bias", true},
		{"denoise_fn.ups.1.2.conv.weight.exp_avg_sq", "denoise_fn.ups.1.2.conv.0.weight.exp_avg_sq", true},
		{"denoise_fn.ups.1.2.conv.0.weight", "denoise_fn.ups.1.2.conv.0.weight", false},
		{"denoise_fn.downs.0.2.conv.1.weight", "denoise_fn.downs.0.2.conv.1.weight", false},
		{"denoise_fn.downs.0.2.conv.weight", "denoise_fn.downs.0.2.conv.weight", false},
		{"denoise_fn.ups.0.1.block1.block.1.weight", "denoise_fn.ups.0.1.block1.block.1.weight", false},
	} {
		got, legacy := LegacyName(c.in)
		if got != c.want || legacy != c.legacy {
			t.Errorf("LegacyName(%q) = %q, %v; want %q, %v", c.in, got, legacy, c.want, c.legacy)
		}
	}
}

// TestLoadConvertsLegacyNames: a checkpoint written with the old Upsample names
// loads under the reference's names (weights and Adam moments), with one notice.
func TestLoadConvertsLegacyNames(t *testing.T) {
	var logs bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	defer slog.SetDefault(prev)

	w := Tensor{Shape: []int{2, 2, 4, 4}, Data: seq(64, 0.25)}
	b := Tensor{Shape: []int{2}, Data: []float32{1, 2}}
	other := Tensor{Shape: []int{2}, Data: []float32{5, 6}}
	dir := filepath.Join(t.TempDir(), DirName(3))
	err := Save(dir, Checkpoint{
		Meta: Meta{Step: 3, Stage: "diffusion"},
		Model: map[string]Tensor{"denoise_fn.ups.0.2.conv.weight": w, "denoise_fn.ups.0.2.conv.bias": b,
			"denoise_fn.downs.0.2.conv.1.bias": other},
		Optimizer:     map[string]Tensor{"denoise_fn.ups.0.2.conv.bias.exp_avg": b, "denoise_fn.ups.0.2.conv.bias.exp_avg_sq": other},
		OptimizerMeta: map[string]string{"adam_step": "3"},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantModel := map[string]Tensor{"denoise_fn.ups.0.2.conv.0.weight": w, "denoise_fn.ups.0.2.conv.0.bias": b,
		"denoise_fn.downs.0.2.conv.1.bias": other}
	if !reflect.DeepEqual(c.Model, wantModel) {
		t.Errorf("model tensors after load: %v", legacyTestNames(c.Model))
	}
	wantOpt := map[string]Tensor{"denoise_fn.ups.0.2.conv.0.bias.exp_avg": b, "denoise_fn.ups.0.2.conv.0.bias.exp_avg_sq": other}
	if !reflect.DeepEqual(c.Optimizer, wantOpt) {
		t.Errorf("optimizer tensors after load: %v", legacyTestNames(c.Optimizer))
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 || !strings.Contains(logs.String(), "old U-Net Upsample names") {
		t.Errorf("want one notice line, got %d:\n%s", n, logs.String())
	}

	// A current checkpoint loads silently.
	logs.Reset()
	dir2 := filepath.Join(t.TempDir(), DirName(4))
	if err := Save(dir2, Checkpoint{Meta: Meta{Step: 4}, Model: wantModel}); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir2); err != nil {
		t.Fatal(err)
	}
	if logs.Len() != 0 {
		t.Errorf("a current checkpoint logged: %s", logs.String())
	}

	// Both names at once is ambiguous.
	dir3 := filepath.Join(t.TempDir(), DirName(5))
	if err := Save(dir3, Checkpoint{Meta: Meta{Step: 5}, Model: map[string]Tensor{
		"denoise_fn.ups.0.2.conv.bias": b, "denoise_fn.ups.0.2.conv.0.bias": b}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir3); err == nil || !strings.Contains(err.Error(), "denoise_fn.ups.0.2.conv.bias") {
		t.Errorf("both names: err = %v, want one naming the old name", err)
	}
}

func legacyTestNames(m map[string]Tensor) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
