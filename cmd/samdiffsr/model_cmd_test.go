package main

import (
	"strings"
	"testing"
)

func TestModelSummaryPaperCounts(t *testing.T) {
	out, errOut, code := runCLI(t, "model", "summary", "--config", "../../configs/sam_diffsr_x4.yaml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"denoise_fn", "12934915", "rrdb", "12381443", "total"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}
