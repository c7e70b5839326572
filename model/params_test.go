package model

import (
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/configs"
)

func loadConfig(t testing.TB, file string) configs.Config {
	t.Helper()
	cfg, err := configs.LoadFiles("../configs/" + file)
	if err != nil {
		t.Fatalf("load %s: %v", file, err)
	}
	return cfg
}

func count(ps []*Param) int {
	n := 0
	for _, p := range ps {
		n += p.Size()
	}
	return n
}

// TestPaperParamCounts checks the exact parameter counts of the paper's networks
// (reference-code-notes §1-§2) and the per-module breakdown of the U-Net.
func TestPaperParamCounts(t *testing.T) {
	m, err := New(loadConfig(t, "sam_diffsr_x4.yaml"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := count(m.UNetParams()); got != 12934915 {
		t.Errorf("U-Net has %d parameters, want 12934915", got)
	}
	if got := count(m.RRDBParams()); got != 12381443 {
		t.Errorf("RRDB has %d parameters, want 12381443", got)
	}
	want := map[string]int{
		"denoise_fn.cond_proj":  1572928,
		"denoise_fn.mlp":        33088,
		"denoise_fn.downs":      4741760,
		"denoise_fn.ups":        4156416,
		"denoise_fn.final_conv": 37123,
	}
	mid := 0
	for _, l := range m.Summary() {
		if w, ok := want[l.Module]; ok && l.Params != w {
			t.Errorf("%s has %d parameters, want %d", l.Module, l.Params, w)
		}
		if strings.HasPrefix(l.Module, "denoise_fn.mid_block") {
			mid += l.Params
		}
	}
	if mid != 2393600 {
		t.Errorf("mid blocks have %d parameters, want 2393600", mid)
	}
}

// TestParamNames checks a few state-dict names of the reference and their shapes.
func TestParamNames(t *testing.T) {
	m, err := New(loadConfig(t, "sam_diffsr_x4.yaml"), 1)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string][]int{}
	seen := map[string]bool{}
	for _, p := range m.Params() {
		if seen[p.Name] {
			t.Errorf("duplicate parameter name %q", p.Name)
		}
		seen[p.Name] = true
		by[p.Name] = p.Shape
	}
	for name, shape := range map[string][]int{
		"denoise_fn.downs.0.0.block1.block.1.weight": {64, 3, 3, 3},
		"denoise_fn.downs.0.0.mlp.1.weight":          {64, 64},
		"denoise_fn.downs.0.0.res_conv.weight":       {64, 3, 1, 1},
		"denoise_fn.downs.0.2.conv.1.weight":         {64, 64, 3, 3},
		"denoise_fn.cond_proj.weight":                {384, 64, 8, 8},
		"denoise_fn.mlp.0.weight":                    {256, 64},
		"denoise_fn.mlp.2.bias":                      {64},
		"denoise_fn.mid_block2.block2.block.1.bias":  {256},
		"denoise_fn.ups.0.0.block1.block.1.weight":   {192, 512, 3, 3},
		"denoise_fn.ups.2.2.conv.0.weight":           {64, 64, 4, 4},
		"denoise_fn.final_conv.0.block.1.weight":     {64, 64, 3, 3},
		"denoise_fn.final_conv.1.weight":             {3, 64, 1, 1},
		"rrdb.conv_first.weight":                     {64, 3, 3, 3},
		"rrdb.RRDB_trunk.16.RDB3.conv5.weight":       {64, 192, 3, 3},
		"rrdb.trunk_conv.bias":                       {64},
		"rrdb.HRconv.weight":                         {64, 64, 3, 3},
		"rrdb.conv_last.weight":                      {3, 64, 3, 3},
	} {
		got, ok := by[name]
		if !ok {
			t.Errorf("no parameter %q", name)
			continue
		}
		if !sameShape(got, shape) {
			t.Errorf("%s has shape %v, want %v", name, got, shape)
		}
	}
	if _, ok := by["denoise_fn.downs.3.2.conv.1.weight"]; ok {
		t.Error("the last down level must have no Downsample")
	}
}
