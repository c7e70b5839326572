//go:build !cuda

package worker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestNewNetWithoutCUDA: in a build without -tags cuda, auto gives the CPU net
// with an Info line saying why, and cuda is an error naming model.backend and
// the fix.
func TestNewNetWithoutCUDA(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	for _, b := range []string{"auto", ""} {
		buf.Reset()
		n, err := NewNet(tinyNetConfig(b), 1, log)
		if err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if !strings.HasPrefix(n.Backend(), "cpu") {
			t.Fatalf("%q: backend %q", b, n.Backend())
		}
		if s := buf.String(); !strings.Contains(s, "level=INFO") || !strings.Contains(s, "without CUDA support") {
			t.Fatalf("%q: log %q", b, s)
		}
	}
	_, err := NewNet(tinyNetConfig("cuda"), 1, log)
	if err == nil {
		t.Fatal("cuda on an untagged build gave no error")
	}
	for _, want := range []string{"model.backend", "make cuda", "auto or cpu"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q lacks %q", err, want)
		}
	}
	// Train refuses it before touching any data.
	if _, err := Train(t.Context(), quietOpts(tinyNetConfig("cuda"), StageRRDB, t.TempDir())); err == nil || !strings.Contains(err.Error(), "model.backend") {
		t.Fatalf("Train with cuda: %v", err)
	}
}
