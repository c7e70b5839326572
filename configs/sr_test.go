package configs

import (
	"strings"
	"testing"
)

// TestSRSamplerValidation checks the sr.* keys: defaults are DDPM and valid, and
// every bad value is a problem naming its key.
func TestSRSamplerValidation(t *testing.T) {
	d := Default()
	if d.SR.Sampler != "ddpm" || len(d.Validate()) != 0 {
		t.Fatalf("default sr %+v, problems %v", d.SR, d.Validate())
	}
	ok := Default()
	ok.SR = SR{Sampler: "ddim", Steps: 20, Eta: 0}
	if ps := ok.Validate(); len(ps) != 0 {
		t.Errorf("ddim 20 steps: %v", ps)
	}
	for _, c := range []struct {
		sr   SR
		key  string
		what string
	}{
		{SR{Sampler: "plms", Steps: 20}, "sr.sampler", "ddpm, ddim"},
		{SR{Sampler: "ddim", Steps: 0}, "sr.steps", "positive number of steps"},
		{SR{Sampler: "ddim", Steps: -3}, "sr.steps", "positive number of steps"},
		{SR{Sampler: "ddim", Steps: 20, Eta: -0.5}, "sr.eta", "[0, 1]"},
	} {
		cfg := Default()
		cfg.SR = c.sr
		ps := cfg.Validate()
		if len(ps) != 1 || ps[0].Key != c.key || !strings.Contains(ps[0].String(), c.what) {
			t.Errorf("sr %+v: problems %v, want one on %s mentioning %q", c.sr, ps, c.key, c.what)
		}
	}
	// The sampler does not change training arithmetic.
	a, b := Default(), Default()
	b.SR = SR{Sampler: "ddim", Steps: 10}
	if a.TrainHash() != b.TrainHash() {
		t.Error("sr.* changes TrainHash")
	}
}
