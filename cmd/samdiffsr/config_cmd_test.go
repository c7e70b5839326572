package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI executes the root command in-process and returns stdout, stderr and the exit code
// main would use.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.Execute()
	code := 0
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
			errb.WriteString(ee.msg)
		} else {
			code = 1
			errb.WriteString(err.Error())
		}
	}
	return out.String(), errb.String(), code
}

func TestConfigValidateShippedConfigs(t *testing.T) {
	for _, f := range []string{"sam_diffsr_x4.yaml", "reference_x4.yaml", "srdiff_x4.yaml", "quickstart.yaml"} {
		out, errs, code := runCLI(t, "config", "validate", "--config", filepath.Join("..", "..", "configs", f))
		if code != 0 || !strings.Contains(out, "config ok") {
			t.Errorf("%s: exit %d, out %q, err %q", f, code, out, errs)
		}
	}
}

func TestConfigValidateRejectsBogusModulation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte("diffusion: {modulation: bogus}\ntrain: {batch_szie: 3}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs, code := runCLI(t, "config", "validate", "--config", p)
	if code != 2 {
		t.Fatalf("exit %d, want 2 (stderr %q)", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	if len(lines) != 2 || !strings.Contains(errs, "train.batch_szie") || !strings.Contains(errs, "diffusion.modulation: \"bogus\"") {
		t.Fatalf("want one line per problem naming key and value, got %q", errs)
	}
}

func TestConfigPrintAppliesEnv(t *testing.T) {
	t.Setenv("SAMDIFFSR_TRAIN_BATCH_SIZE", "8")
	out, errs, code := runCLI(t, "config", "print", "--config", filepath.Join("..", "..", "configs", "quickstart.yaml"))
	if code != 0 || !strings.Contains(out, "  batch_size: 8\n") {
		t.Fatalf("exit %d, err %q, out:\n%s", code, errs, out)
	}
}

func TestHelpListsCommandsWithExamples(t *testing.T) {
	root := newRootCmd()
	for _, c := range root.Commands() {
		if c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		if c.Example == "" {
			t.Errorf("command %q has no example in --help", c.Name())
		}
		for _, sub := range c.Commands() {
			if sub.Example == "" {
				t.Errorf("command %q %q has no example in --help", c.Name(), sub.Name())
			}
		}
	}
}
