package progress

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestPlainLinesRateAndETA(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	var logs bytes.Buffer
	no := false
	b := New(Options{Label: "masks", Unit: "images", Total: 10, Log: slog.New(slog.NewTextHandler(&logs, nil)),
		Interval: time.Second, ForceTTY: &no, Now: clock})
	now = now.Add(2 * time.Second)
	b.Add(4)
	line := b.Line()
	for _, want := range []string{"masks", "4/10 images", "40%", "2.00 images/s", "ETA 3s"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if !strings.Contains(logs.String(), "4/10 images") {
		t.Errorf("no plain log line written: %q", logs.String())
	}
	b.Add(6)
	b.Done()
	if n := strings.Count(logs.String(), "10/10"); n != 1 {
		t.Errorf("final line logged %d times, want once: %q", n, logs.String())
	}
}

func TestTTYRedrawsInPlace(t *testing.T) {
	var out bytes.Buffer
	yes := true
	b := New(Options{Label: "train", Unit: "steps", Total: 5, Out: &out, ForceTTY: &yes})
	b.SetExtra("loss 0.5")
	b.Add(5)
	b.Done()
	s := out.String()
	if !strings.Contains(s, "\r\033[K") || !strings.Contains(s, "[========================]") || !strings.Contains(s, "loss 0.5") || !strings.HasSuffix(s, "\n") {
		t.Fatalf("bad terminal output %q", s)
	}
}

// TestResumedRateCountsOnlyNewItems: a bar started at a resumed count (Set) shows the
// count and percentage from it, but its rate and ETA only from the items done since.
func TestResumedRateCountsOnlyNewItems(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	no := false
	b := New(Options{Label: "train", Unit: "steps", Total: 1000, Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)),
		Interval: time.Second, ForceTTY: &no, Now: clock})
	b.Set(800)
	now = now.Add(10 * time.Second)
	b.Set(820)
	line := b.Line()
	for _, want := range []string{"820/1000 steps", "82%", "2.00 steps/s", "ETA 1m30s"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
}
