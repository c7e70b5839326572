package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/dataset"
)

// quickstartCheckout makes a folder laid out like a fresh clone (configs/quickstart.yaml
// and nothing else), makes it the working directory, and shrinks the quickstart through
// the environment so that it trains in seconds: same commands, fewer steps and images.
func quickstartCheckout(t *testing.T) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("..", "..", "configs", "quickstart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "configs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "configs", "quickstart.yaml"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	for k, v := range map[string]string{
		"SAMDIFFSR_TRAIN_RRDB_STEPS": "2", "SAMDIFFSR_TRAIN_STEPS": "2", "SAMDIFFSR_DATA_SYNTHETIC_N": "3",
		"SAMDIFFSR_DATA_VAL_IMAGES": "1", "SAMDIFFSR_DIFFUSION_TIMESTEPS": "4", "SAMDIFFSR_TRAIN_BATCH_SIZE": "2",
		"SAMDIFFSR_TRAIN_RRDB_BATCH_SIZE": "2",
	} {
		t.Setenv(k, v)
	}
}

// TestNewcomerPath: on a fresh checkout, `train --config configs/quickstart.yaml` makes
// the synthetic data, trains both stages and says where everything is; run again it
// skips both finished stages; then sr on a held-out image works with the run folder,
// and checkpoints list takes the same run folder.
func TestNewcomerPath(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two tiny stages: skipped with -short")
	}
	quickstartCheckout(t)
	cli := func(args ...string) string {
		t.Helper()
		out, errs, code := runCLI(t, append([]string{"--log-level", "error"}, args...)...)
		if code != 0 {
			t.Fatalf("samdiffsr %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	out := cli("train", "--config", "configs/quickstart.yaml")
	for _, want := range []string{"synthetic", "rrdb stage: 2 of 2 steps", "diffusion stage: 2 of 2 steps"} {
		if !strings.Contains(out, want) {
			t.Errorf("train output lacks %q:\n%s", want, out)
		}
	}
	out = cli("train", "--config", "configs/quickstart.yaml")
	if strings.Count(out, "already trained") != 2 {
		t.Errorf("second train did not skip both stages:\n%s", out)
	}
	cli("data", "downscale", "--in", "demo/data/val/0001.png", "--out", "demo/lr/0001.png")
	cli("sr", "--config", "configs/quickstart.yaml", "--checkpoint", "demo/run", "--in", "demo/lr", "--out", "demo/sr")
	if img, err := dataset.LoadRGB("demo/sr/0001.png"); err != nil || img.W != 128 || img.H != 128 {
		t.Fatalf("SR image: %v", err)
	}
	// eval with the diffusion checkpoint reports progress within the image (sampler steps).
	_, errs, code := runCLI(t, "--config", "configs/quickstart.yaml", "eval", "--checkpoint", "demo/run", "--data", "demo/data/val")
	if code != 0 || !strings.Contains(errs, "sr 0001 4/4 steps") {
		t.Errorf("eval progress: exit %d\n%s", code, errs)
	}
	// checkpoints show/verify read a run folder as sr does: its newest diffusion checkpoint.
	out = cli("checkpoints", "show", "demo/run", "--json")
	if !strings.Contains(out, `"stage": "diffusion"`) && !strings.Contains(out, `"stage":"diffusion"`) {
		t.Errorf("checkpoints show demo/run:\n%s", out)
	}
	if out = cli("checkpoints", "verify", "demo/run"); !strings.Contains(out, filepath.Join("diffusion", "checkpoints", "step_000000002")) {
		t.Errorf("checkpoints verify demo/run:\n%s", out)
	}
	out = cli("checkpoints", "list", "demo/run")
	if !strings.Contains(out, filepath.Join("rrdb", "checkpoints", "step_000000002")) || !strings.Contains(out, filepath.Join("diffusion", "checkpoints", "step_000000002")) {
		t.Errorf("checkpoints list demo/run:\n%s", out)
	}
	// Stopping early says so and how to continue.
	// The bar counts towards the stage's 2 steps, not to the stop.
	out, errs, code = runCLI(t, "--config", "configs/quickstart.yaml", "train", "--stage", "rrdb", "--stop-at", "1", "--out", "demo/run2")
	if code != 0 || !strings.Contains(out, "stopped early at step 1 of 2") || !strings.Contains(out, "--resume") || !strings.Contains(errs, "1/2 steps (50%)") {
		t.Errorf("--stop-at 1: exit %d\n%s\n%s", code, out, errs)
	}
	// data synth with the same config writes its data.synthetic block, no --out needed.
	out = cli("data", "synth", "--config", "configs/quickstart.yaml", "--n", "1")
	if !strings.Contains(out, filepath.Join("demo", "data", "train")) {
		t.Errorf("data synth --config:\n%s", out)
	}
}

// TestTrainFlagsValidatedLikeKeys: --steps, --stage and --stop-at get the checks of the
// config keys they override (exit 2 naming flag, key and value), before any work.
func TestTrainFlagsValidatedLikeKeys(t *testing.T) {
	quickstartCheckout(t)
	for _, c := range []struct{ args, want string }{
		{"--stage rrdb --steps 0", "--steps 0 (train.rrdb_steps)"},
		{"--stage diffusion --steps -5", "--steps -5 (train.steps)"},
		{"--steps 7", "--stage rrdb"},
		{"--stop-at -1", "--stop-at -1"},
		{"--stage gan", `--stage "gan" (train.stage)`},
	} {
		args := append([]string{"train", "--config", "configs/quickstart.yaml"}, strings.Fields(c.args)...)
		_, errs, code := runCLI(t, args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%s: exit %d, %q", c.args, code, errs)
		}
	}
	if _, err := os.Stat("demo"); err == nil {
		t.Error("a refused command created demo/")
	}
}

// TestCheckpointFallbackAndBareWeights: when the newest checkpoint of a run is damaged,
// sr says so (naming it and the one used) instead of silently loading the older one;
// sr on a folder does every good image past bad ones; a bare model.safetensors is
// accepted with a note that it is unverified.
func TestCheckpointFallbackAndBareWeights(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a tiny stage: skipped with -short")
	}
	quickstartCheckout(t)
	t.Setenv("SAMDIFFSR_TRAIN_RRDB_STEPS", "4")
	t.Setenv("SAMDIFFSR_TRAIN_CKPT_EVERY", "2")
	if _, errs, code := runCLI(t, "--log-level", "error", "train", "--config", "configs/quickstart.yaml", "--stage", "rrdb"); code != 0 {
		t.Fatalf("train: %s", errs)
	}
	lr := filepath.Join("demo", "lr.png")
	if err := dataset.SavePNG(lr, dataset.Synth(1, 8, 8)); err != nil {
		t.Fatal(err)
	}
	newest := filepath.Join("demo", "run", "rrdb", checkpoints.SubDir, checkpoints.DirName(4))
	if err := os.WriteFile(filepath.Join(newest, checkpoints.ModelFile), []byte("damaged"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs, code := runCLI(t, "--log-level", "warn", "--config", "configs/quickstart.yaml", "sr", "--checkpoint", "demo/run", "--in", lr, "--out", "demo/sr.png")
	older := filepath.Join("demo", "run", "rrdb", checkpoints.SubDir, checkpoints.DirName(2))
	if code != 0 || !strings.Contains(errs, "skipped="+newest) || !strings.Contains(errs, "using="+older) {
		t.Fatalf("fallback: exit %d, stderr:\n%s", code, errs)
	}
	// sr on a folder does every good image and lists every bad one, exit 1.
	in := filepath.Join("demo", "lrs")
	for name, side := range map[string]int{"a.png": 8, "c.png": 6, "tiny.png": 2} {
		if err := dataset.SavePNG(filepath.Join(in, name), dataset.Synth(2, side, side)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(in, "b.png"), []byte("\x89PNG\r\n\x1a\ncut"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs, code = runCLI(t, "--log-level", "error", "--config", "configs/quickstart.yaml", "sr", "--checkpoint", "demo/run/rrdb", "--in", in, "--out", "demo/srs")
	if code != 1 || !strings.Contains(errs, "2 of 4 images failed") || !strings.Contains(errs, filepath.Join(in, "b.png")) || !strings.Contains(errs, filepath.Join(in, "tiny.png")) {
		t.Fatalf("sr folder: exit %d\n%s", code, errs)
	}
	for _, name := range []string{"a.png", "c.png"} {
		if _, err := os.Stat(filepath.Join("demo", "srs", name)); err != nil {
			t.Errorf("good image %s not written: %v", name, err)
		}
	}
	// A bare weights file (copied out of its folder) is usable, with a note.
	solo := filepath.Join("demo", "solo", checkpoints.ModelFile)
	data, err := os.ReadFile(filepath.Join(older, checkpoints.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(solo), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(solo, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs, code = runCLI(t, "--log-level", "warn", "--config", "configs/quickstart.yaml", "sr", "--checkpoint", solo, "--in", lr, "--out", "demo/sr2.png")
	if code != 0 || !strings.Contains(errs, "not verified") {
		t.Fatalf("bare weights: exit %d, stderr:\n%s", code, errs)
	}
}
