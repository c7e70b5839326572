//go:build cgo

package samonnx

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/configs"
)

// TestNewMissingFiles: a missing model file or library fails New (start-up, not
// the first image) with the config key, the path and the fix.
func TestNewMissingFiles(t *testing.T) {
	good := standinConfig(t, true)
	missing := filepath.Join(t.TempDir(), "nope.onnx")
	for _, c := range []struct {
		name  string
		edit  func(*configs.SAM)
		wants []string
	}{
		{"encoder missing", func(c *configs.SAM) { c.Encoder = missing }, []string{"masks.sam.encoder", missing, "README"}},
		{"decoder missing", func(c *configs.SAM) { c.Decoder = missing }, []string{"masks.sam.decoder", missing}},
		{"encoder empty", func(c *configs.SAM) { c.Encoder = "" }, []string{"masks.sam.encoder", "empty"}},
		{"encoder is a directory", func(c *configs.SAM) { c.Encoder = t.TempDir() }, []string{"masks.sam.encoder", "directory"}},
		{"library missing", func(c *configs.SAM) { c.Library = missing }, []string{"masks.sam.library", missing, "make onnxruntime"}},
		{"decoder given as encoder", func(c *configs.SAM) { c.Encoder = c.Decoder }, []string{"masks.sam.encoder", "(1,3,1024,1024)"}},
		{"encoder given as decoder", func(c *configs.SAM) { c.Decoder = c.Encoder }, []string{"masks.sam.decoder", "image_embeddings", "export_onnx_model.py"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := good
			c.edit(&cfg)
			s, err := New(cfg)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestResolveLibraryEnv(t *testing.T) {
	t.Setenv(LibraryEnv, "")
	if _, err := ResolveLibrary(""); err == nil || !strings.Contains(err.Error(), "make onnxruntime") || !strings.Contains(err.Error(), LibraryEnv) {
		t.Errorf("no library configured: %v", err)
	}
	lib := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(LibraryEnv, lib)
	if got, err := ResolveLibrary(""); err != nil || got != lib {
		t.Errorf("ResolveLibrary from %s = %q, %v", LibraryEnv, got, err)
	}
	if got, err := ResolveLibrary(lib); err != nil || got != lib {
		t.Errorf("ResolveLibrary(config) = %q, %v", got, err)
	}
}

// TestNewBadLibrary loads a file that is not ONNX Runtime, in a child process (the
// runtime is process-wide): New must fail saying how to get a library.
func TestNewBadLibrary(t *testing.T) {
	if os.Getenv("SAMONNX_BAD_LIBRARY") != "" {
		cfg := standinConfig(t, true)
		cfg.Library = os.Getenv("SAMONNX_BAD_LIBRARY")
		_, err := New(cfg)
		if err == nil {
			t.Fatal("New succeeded with a bad library")
		}
		os.Stdout.WriteString("ERR: " + err.Error() + "\n")
		return
	}
	testLibrary(t) // the child needs the models' other checks to pass
	bad := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(bad, []byte("not a shared library"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNewBadLibrary$", "-test.v")
	cmd.Env = append(os.Environ(), "SAMONNX_BAD_LIBRARY="+bad)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child: %s", out)
	for _, w := range []string{"ERR: ", bad, "make onnxruntime"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("child output does not mention %q:\n%s", w, out)
		}
	}
}
