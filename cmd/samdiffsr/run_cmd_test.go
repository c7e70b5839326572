package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeRunImages(t *testing.T, dir string, n int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		img := image.NewRGBA(image.Rect(0, 0, 48, 40))
		for y := range 40 {
			for x := range 48 {
				c := color.RGBA{uint8(40 * i), 200, 30, 255}
				if x > 16+i && y > 10 {
					c = color.RGBA{10, uint8(7 * i), 220, 255}
				}
				img.Set(x, y, c)
			}
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("im%02d.png", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRunMaskPhase runs `samdiffsr run` (embedded NATS, one voter, two workers) on a
// few images and a corrupt one, checks its label maps are the ones `samdiffsr masks`
// writes, and that a second run resumes with everything already done.
func TestRunMaskPhase(t *testing.T) {
	dir := t.TempDir()
	data, state, out, local := filepath.Join(dir, "data"), filepath.Join(dir, "state"), filepath.Join(dir, "out"), filepath.Join(dir, "local")
	writeRunImages(t, data, 10)
	if err := os.WriteFile(filepath.Join(data, "broken.png"), []byte("\x89PNG\r\n\x1a\nnot really"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv("SAMDIFFSR_CONFIG", "")
	t.Setenv("SAMDIFFSR_CLUSTER_COORDINATOR_RAFT_ADDR", addr)
	t.Setenv("SAMDIFFSR_CLUSTER_COORDINATOR_MAX_DELIVER", "2")
	t.Setenv("SAMDIFFSR_MASKS_BUILTIN_MIN_SIZE", "20")

	args := []string{"run", "--masks-only", "--data", data, "--state", state, "--masks-out", out, "--workers", "2", "--log-level", "warn"}
	stdout, stderr, code := runCLI(t, args...)
	// A failed image makes the exit status 1, as it does for `samdiffsr masks`.
	if code != 1 || !strings.Contains(stdout, "masks: 10 done, 1 failed of 11") || !strings.Contains(stdout, "broken.png") ||
		!strings.Contains(stderr, "1 of 11 images failed") {
		t.Fatalf("run: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	_, stderr, code = runCLI(t, "masks", "--data", data, "--out", local, "--workers", "2", "--log-level", "warn")
	if code != 1 {
		t.Fatalf("masks: exit %d (want 1: one image failed): %s", code, stderr)
	}
	for i := range 10 {
		for _, ext := range []string{".png", ".json"} {
			name := fmt.Sprintf("im%02d%s", i, ext)
			a, err := os.ReadFile(filepath.Join(out, name))
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(local, name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("%s: run and masks wrote different files", name)
			}
		}
	}
	st, err := os.Stat(filepath.Join(out, "im00.png"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)

	stdout, stderr, code = runCLI(t, args...)
	if code != 1 || !strings.Contains(stdout, "masks: 10 done, 1 failed of 11") {
		t.Fatalf("second run: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	st2, err := os.Stat(filepath.Join(out, "im00.png"))
	if err != nil {
		t.Fatal(err)
	}
	if !st2.ModTime().Equal(st.ModTime()) {
		t.Errorf("second run rewrote im00.png: nothing should be redone")
	}
}
