package configs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv() []string { return nil }

func TestShippedConfigsValidate(t *testing.T) {
	for _, f := range []string{"sam_diffsr_x4.yaml", "reference_x4.yaml", "srdiff_x4.yaml", "quickstart.yaml"} {
		t.Run(f, func(t *testing.T) {
			if _, err := Load(LoadOptions{Files: []string{f}, Environ: noEnv}); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		})
	}
}

func TestDefaultIsValidAndThePaper(t *testing.T) {
	c := Default()
	if ps := c.Validate(); len(ps) != 0 {
		t.Fatalf("default invalid: %v", ps)
	}
	if c.Diffusion.Modulation != "paper" || c.Train.BatchSize != 16 || c.Masks.SPEMean != "region" || !c.Masks.ReduceSingleRegion {
		t.Fatalf("default is not the paper's setting: %+v", c)
	}
}

func TestReferenceSwitches(t *testing.T) {
	c, err := Load(LoadOptions{Files: []string{"reference_x4.yaml"}, Environ: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if c.Diffusion.Modulation != "reference" || c.Masks.SPEMean != "image" || c.Masks.ReduceSingleRegion ||
		c.Masks.MaskCrop != "reference" || c.Train.BatchSize != 64 || c.Train.LRSchedule != "step" {
		t.Fatalf("reference switches not set: %+v", c)
	}
}

func TestBadValueNamesKey(t *testing.T) {
	p := writeFile(t, "diffusion: {modulation: bogus}\n")
	_, err := Load(LoadOptions{Files: []string{p}, Environ: noEnv})
	pe, ok := err.(*ProblemsError)
	if !ok {
		t.Fatalf("want *ProblemsError, got %v", err)
	}
	if len(pe.Problems) != 1 || pe.Problems[0].Key != "diffusion.modulation" || !strings.Contains(pe.Problems[0].String(), "bogus") ||
		!strings.Contains(pe.Problems[0].String(), "paper, reference, none") {
		t.Fatalf("problem does not name key, value and choices: %v", pe.Problems)
	}
}

func TestUnknownKeyIsAProblem(t *testing.T) {
	p := writeFile(t, "train:\n  batch_szie: 8\n")
	_, err := Load(LoadOptions{Files: []string{p}, Environ: noEnv})
	if err == nil || !strings.Contains(err.Error(), "train.batch_szie") || !strings.Contains(err.Error(), "did you mean train.batch_size") {
		t.Fatalf("typo not reported with a suggestion: %v", err)
	}
}

func TestTypeErrorIsAProblem(t *testing.T) {
	p := writeFile(t, "train:\n  batch_size: many\n")
	_, err := Load(LoadOptions{Files: []string{p}, Environ: noEnv})
	if err == nil || !strings.Contains(err.Error(), "batch_size") {
		t.Fatalf("type error not reported by key: %v", err)
	}
}

func TestCrossFieldRules(t *testing.T) {
	c := Default()
	c.Data.PatchSize = 100
	c.Data.Scale = 2
	c.Masks.Segmenter = "sam-onnx"
	var keys []string
	for _, p := range c.Validate() {
		keys = append(keys, p.Key)
	}
	got := strings.Join(keys, " ")
	for _, want := range []string{"data.scale", "data.patch_size", "masks.sam.encoder", "masks.sam.decoder"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing problem for %s in %v", want, got)
		}
	}
}

func TestLayeringAndEnv(t *testing.T) {
	over := writeFile(t, "train: {batch_size: 4}\nmodel: {unet: {dim_mults: [1, 2]}}\n")
	env := func() []string {
		return []string{"SAMDIFFSR_TRAIN_LR=0.001", "SAMDIFFSR_CLUSTER_WORKER_ACK_WAIT=5s", "PATH=/bin", "SAMDIFFSR_LOG_LEVEL=debug"}
	}
	c, err := Load(LoadOptions{Files: []string{"sam_diffsr_x4.yaml", over}, Environ: env})
	if err != nil {
		t.Fatal(err)
	}
	if c.Train.BatchSize != 4 || c.Train.LR != 0.001 || c.Cluster.Worker.AckWait.String() != "5s" || len(c.Model.UNet.DimMults) != 2 {
		t.Fatalf("layering/env not applied: batch %d lr %g ack %v mults %v", c.Train.BatchSize, c.Train.LR, c.Cluster.Worker.AckWait, c.Model.UNet.DimMults)
	}
	if c.Diffusion.Modulation != "paper" {
		t.Fatalf("base file lost")
	}
}

func TestUnknownEnvIsAProblem(t *testing.T) {
	env := func() []string { return []string{"SAMDIFFSR_TRAIN_BATCHSIZE=8"} }
	_, err := Load(LoadOptions{Environ: env})
	if err == nil || !strings.Contains(err.Error(), "SAMDIFFSR_TRAIN_BATCHSIZE") {
		t.Fatalf("unknown env var not reported: %v", err)
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	c := Default()
	c.Train.BatchSize = 3
	data, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	p := writeFile(t, string(data))
	back, err := Load(LoadOptions{Files: []string{p}, Environ: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := back.YAML()
	if string(again) != string(data) {
		t.Fatalf("round trip differs:\n%s\n---\n%s", data, again)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(LoadOptions{Files: []string{"/nonexistent/x.yaml"}})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/x.yaml") {
		t.Fatalf("missing file not named: %v", err)
	}
}

func TestTrainHashIgnoresPathsAndCadence(t *testing.T) {
	a := Default()
	b := a
	b.Data.Root, b.Train.Out, b.Cluster.Worker.Roles, b.Cluster.Train.RingAddr, b.Train.LogEvery = "/elsewhere", "runs/other", []string{"train"}, "10.0.0.7:7600", 7
	if a.TrainHash() != b.TrainHash() {
		t.Fatal("paths, cadence and the cluster section changed the training hash")
	}
	if a.Hash() == b.Hash() {
		t.Fatal("the full hash should see those changes")
	}
	c := a
	c.Train.LR *= 2
	d := a
	d.Model.UNet.Dim++
	e := a
	e.Seed++
	for _, x := range []Config{c, d, e} {
		if x.TrainHash() == a.TrainHash() {
			t.Fatalf("a change of the arithmetic kept the training hash")
		}
	}
}

// TestTypeErrorsNameSourceKeyValue: a wrong-typed value names the file or environment
// variable, the key and the value, without Go internals; fractional integers are
// refused, not truncated; range errors of the same file are still reported; a YAML
// syntax error is a problem (exit 2 in the CLI) naming the file and the line.
func TestTypeErrorsNameSourceKeyValue(t *testing.T) {
	p := writeFile(t, "train:\n  batch_size: \"eight\"\n  steps: 1.9\n  lr: -1\ndata: {patch_size: 8.5}\n")
	_, err := Load(LoadOptions{Files: []string{p}, Environ: noEnv})
	var pe *ProblemsError
	if !errors.As(err, &pe) {
		t.Fatalf("not a ProblemsError: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{p + `: train.batch_size: "eight"`, p + ": train.steps: 1.9", p + ": data.patch_size: 8.5", "train.lr: -1"} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "strconv") || strings.Contains(msg, "cannot parse") {
		t.Errorf("Go internals shown:\n%s", msg)
	}
	env := func() []string {
		return []string{"SAMDIFFSR_TRAIN_BATCH_SIZE=eight", "SAMDIFFSR_TRAIN_LR=x", "SAMDIFFSR_TRAIN_STEPS=12"}
	}
	c, err := Load(LoadOptions{Environ: env})
	if err == nil || !strings.Contains(err.Error(), `env SAMDIFFSR_TRAIN_BATCH_SIZE: train.batch_size: "eight"`) ||
		!strings.Contains(err.Error(), `env SAMDIFFSR_TRAIN_LR: train.lr: "x"`) || c.Train.Steps != 12 {
		t.Fatalf("env: %v (steps %d)", err, c.Train.Steps)
	}
	bad := writeFile(t, "train:\n  batch_size: 8\n   steps: [\n")
	_, err = Load(LoadOptions{Files: []string{bad}, Environ: noEnv})
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("syntax error: %v", err)
	}
}
