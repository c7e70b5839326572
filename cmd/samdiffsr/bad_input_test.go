package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/dataset"
)

// TestRunReportsPanicAsInternalError: a panic on the command's goroutine exits 70 with
// an internal-error message, never the usage-error code 2 Go's runtime would use.
func TestRunReportsPanicAsInternalError(t *testing.T) {
	root := &cobra.Command{Use: "samdiffsr", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(&cobra.Command{Use: "boom", RunE: func(*cobra.Command, []string) error {
		var s []int
		_ = s[3]
		return nil
	}})
	root.SetArgs([]string{"boom"})
	var errb bytes.Buffer
	root.SetErr(&errb)
	if code := run(context.Background(), root); code != exitInternal || !strings.Contains(errb.String(), "internal error") {
		t.Fatalf("exit %d, want %d; stderr %q", code, exitInternal, errb.String())
	}
}

// TestTileFlagsRefused: sr and eval refuse tile sizes and overlaps they cannot use, and
// run a worker count, naming the flag and the value, with the usage exit code, before
// any work.
func TestTileFlagsRefused(t *testing.T) {
	in := filepath.Join(t.TempDir(), "a.png")
	if err := dataset.SavePNG(in, dataset.Synth(1, 16, 16)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ args, want string }{
		{"--tile 0", "--tile 0"},
		{"--tile -4", "--tile -4"},
		{"--tile 1", "--tile 1"},
		{"--overlap -1", "--overlap -1"},
		{"--tile 16 --overlap 9", "--overlap 9"},
	} {
		for _, cmd := range [][]string{
			{"sr", "--checkpoint", "/nonexistent", "--in", in, "--out", in + ".sr.png"},
			{"eval", "--checkpoint", "/nonexistent", "--data", filepath.Dir(in)},
		} {
			args := append(cmd, strings.Fields(c.args)...)
			_, errs, code := runCLI(t, args...)
			if code != 2 || !strings.Contains(errs, c.want) {
				t.Errorf("%v: exit %d, %q", args, code, errs)
			}
		}
	}
	for _, w := range []string{"0", "-3"} {
		_, errs, code := runCLI(t, "run", "--workers", w, "--data", "/nonexistent")
		if code != 2 || !strings.Contains(errs, "--workers "+w) {
			t.Errorf("run --workers %s: exit %d, %q", w, code, errs)
		}
	}
	_, errs, code := runCLI(t, "sr", "--checkpoint", "/nonexistent", "--in", in, "--out", in+".jpg")
	if code != 2 || !strings.Contains(errs, ".png") {
		t.Errorf("--out x.jpg: exit %d, %q", code, errs)
	}
}

// writeHugeHeaderPNG writes a small PNG whose header claims w x h pixels.
func writeHugeHeaderPNG(t *testing.T, path string, w, h uint32) {
	t.Helper()
	if err := dataset.SavePNG(path, dataset.Synth(1, 16, 16)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint32(data[16:], w)
	binary.BigEndian.PutUint32(data[20:], h)
	binary.BigEndian.PutUint32(data[29:], crc32.ChecksumIEEE(data[12:29]))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDataCheckAndEvalBadImages: data check reports a huge-header PNG and a too-small
// image; eval does every good image, writes metrics.csv for them, names every bad
// one and exits 1.
func TestDataCheckAndEvalBadImages(t *testing.T) {
	dir := t.TempDir()
	writeHugeHeaderPNG(t, filepath.Join(dir, "bomb.png"), 10000, 9000)
	for name, side := range map[string]int{"good.png": 32, "small.png": 8, "zgood.png": 24} {
		if err := dataset.SavePNG(filepath.Join(dir, name), dataset.Synth(3, side, side)); err != nil {
			t.Fatal(err)
		}
	}
	out, errs, code := runCLI(t, "--log-level", "error", "data", "check", "--root", dir)
	if code != 1 || !strings.Contains(out, "bomb.png") || !strings.Contains(out, "data.max_pixels") || !strings.Contains(out, "small.png") {
		t.Fatalf("data check: exit %d\n%s\n%s", code, out, errs)
	}
	save := filepath.Join(t.TempDir(), "sr")
	out, errs, code = runCLI(t, "--log-level", "error", "eval", "--baseline", "bicubic", "--data", dir, "--save", save)
	if code != 1 || !strings.Contains(errs, "bomb.png") || !strings.Contains(errs, "small.png") || !strings.Contains(out, "2 images") {
		t.Fatalf("eval: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	csv, err := os.ReadFile(filepath.Join(save, "metrics.csv"))
	if err != nil || strings.Count(string(csv), "\n") != 3 || !strings.Contains(string(csv), "zgood,24,24") {
		t.Fatalf("metrics.csv: %v\n%s", err, csv)
	}
}

// TestCoordinatorRefusesToIdle: with no --bootstrap/--join and no raft state, or with
// no way for anyone to reach its NATS server, coordinator exits 2 at once naming what
// is missing, and creates nothing.
func TestCoordinatorRefusesToIdle(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"coordinator"}, "--bootstrap"},
		{[]string{"coordinator", "--bootstrap"}, "--nats"},
		{[]string{"coordinator", "--join", "c1", "--data", "state/c2"}, "--nats"},
	} {
		_, errs, code := runCLI(t, c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %q", c.args, code, errs)
		}
	}
	if ents, _ := os.ReadDir("."); len(ents) != 0 {
		t.Errorf("created %v", ents)
	}
}

// TestConfigSyntaxErrorIsUsageError: a YAML syntax error exits 2 (as every config
// problem does), naming the file and the line.
func TestConfigSyntaxErrorIsUsageError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "broken.yaml")
	if err := os.WriteFile(p, []byte("train:\n  batch_size: 8\n   steps: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs, code := runCLI(t, "config", "validate", "--config", p)
	if code != 2 || !strings.Contains(errs, p) || !strings.Contains(errs, "line 3") {
		t.Fatalf("exit %d, %q", code, errs)
	}
}

// TestVersionFlag: --version answers with the build's version (and the Go version).
func TestVersionFlag(t *testing.T) {
	out, errs, code := runCLI(t, "--version")
	if code != 0 || !strings.Contains(out, "samdiffsr version") || !strings.Contains(out, "go1.") {
		t.Fatalf("exit %d, out %q, err %q", code, out, errs)
	}
}

// TestHelpDefaultsShownOnce: sr's --overlap help shows one default, not cobra's and ours.
func TestHelpDefaultsShownOnce(t *testing.T) {
	out, _, _ := runCLI(t, "sr", "--help")
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--overlap") && strings.Count(line, "default") != 1 {
			t.Errorf("--overlap help: %q", line)
		}
	}
}

// TestDataCheckHonoursMaxPixels: data.max_pixels (here from the environment) is the
// limit data check and masks apply: a 32x32 image passes at 1024 pixels, not at 1000.
func TestDataCheckHonoursMaxPixels(t *testing.T) {
	dir := t.TempDir()
	if err := dataset.SavePNG(filepath.Join(dir, "a.png"), dataset.Synth(1, 32, 32)); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SAMDIFFSR_DATA_MAX_PIXELS", "1024")
	if _, errs, code := runCLI(t, "--log-level", "error", "data", "check", "--root", dir); code != 0 {
		t.Fatalf("at the limit: exit %d %s", code, errs)
	}
	t.Setenv("SAMDIFFSR_DATA_MAX_PIXELS", "1000")
	out, _, code := runCLI(t, "--log-level", "error", "data", "check", "--root", dir, "--headers-only")
	if code != 1 || !strings.Contains(out, "more than the limit of 1000") {
		t.Fatalf("over the limit: exit %d\n%s", code, out)
	}
	// masks applies the same limit.
	masks := filepath.Join(t.TempDir(), "masks")
	_, errs, code := runCLI(t, "--log-level", "warn", "masks", "--data", dir, "--out", masks, "--workers", "1")
	if code != 1 || !strings.Contains(errs, "more than the limit of 1000") {
		t.Fatalf("masks over the limit: exit %d\n%s", code, errs)
	}
}
