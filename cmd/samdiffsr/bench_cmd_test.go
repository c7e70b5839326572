package main

import (
	"strings"
	"testing"
)

// TestBenchMethodFlags: missing or bad flags are usage errors (exit 2) naming the flag.
func TestBenchMethodFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "method", "--out", t.TempDir()}, "--photos and --out are required"},
		{[]string{"bench", "method", "--photos", t.TempDir(), "--out", t.TempDir(), "--budgets", "300,x"}, `--budgets "300,x"`},
		{[]string{"bench", "method", "--photos", t.TempDir(), "--out", t.TempDir(), "--ddim-steps", "0"}, "--ddim-steps 0"},
	} {
		_, stderr, code := runCLI(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, stderr, c.want)
		}
	}
}
