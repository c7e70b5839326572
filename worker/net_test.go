package worker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/configs"
)

func tinyNetConfig(backend string) configs.Config {
	cfg := configs.Default()
	cfg.Model.RRDB = configs.RRDB{NF: 4, NB: 2, GC: 4}
	cfg.Model.UNet = configs.UNet{Dim: 4, DimMults: []int{1, 2}}
	cfg.Model.Backend = backend
	return cfg
}

// TestNewNetSelection: cpu gives the CPU net silently; an unknown backend is an
// error naming model.backend. (auto and cuda depend on the build: net_nocuda_test.go.)
func TestNewNetSelection(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	n, err := NewNet(tinyNetConfig("cpu"), 1, log)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if !strings.HasPrefix(n.Backend(), "cpu") || n.Model() == nil {
		t.Fatalf("cpu: backend %q", n.Backend())
	}
	if buf.Len() != 0 {
		t.Fatalf("cpu logged %q", buf.String())
	}
	if _, err := NewNet(tinyNetConfig("tpu"), 1, log); err == nil || !strings.Contains(err.Error(), "model.backend") {
		t.Fatalf("tpu: %v", err)
	}
}

// TestCPUNetMatchesModel: the CPU net's weights are model.New's (the stored
// model.backend never reaches model.New, which rejects cuda).
func TestCPUNetMatchesModel(t *testing.T) {
	a, err := NewNet(tinyNetConfig("cpu"), 7, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	b, err := newCPUModel(tinyNetConfig("cuda"), 7)
	if err != nil {
		t.Fatal(err)
	}
	av, bv := a.Model().UNetValues(), b.UNetValues()
	for i := range av {
		if av[i] != bv[i] {
			t.Fatalf("value %d differs", i)
		}
	}
}

// TestMomentsRoundTrip: flatMoments and momentsFlat are inverse and follow
// model.Adam's names.
func TestMomentsRoundTrip(t *testing.T) {
	m, err := newCPUModel(tinyNetConfig("cpu"), 1)
	if err != nil {
		t.Fatal(err)
	}
	ps := m.RRDBParams()
	n := len(m.RRDBValues())
	mm, v := make([]float32, n), make([]float32, n)
	for i := range mm {
		mm[i], v[i] = float32(i), float32(2*i)
	}
	if ts := flatMoments(ps, 0, mm, v); ts != nil {
		t.Fatalf("step 0 gave %d tensors", len(ts))
	}
	ts := flatMoments(ps, 3, mm, v)
	if ts[0].Name != ps[0].Name+".exp_avg" || ts[1].Name != ps[0].Name+".exp_avg_sq" {
		t.Fatalf("names %s %s", ts[0].Name, ts[1].Name)
	}
	m2, v2, err := momentsFlat(ps, 3, ts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range mm {
		if m2[i] != mm[i] || v2[i] != v[i] {
			t.Fatalf("moment %d: %v %v", i, m2[i], v2[i])
		}
	}
}
