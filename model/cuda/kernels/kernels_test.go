package kernels

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPTXCurrent checks that the committed kernels.ptx is what scripts/build-ptx.sh
// makes from kernels.cu, when the same clang as the PTX's first line is installed.
func TestPTXCurrent(t *testing.T) {
	ptx, err := os.ReadFile("kernels.ptx")
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := bytes.Cut(ptx, []byte("\n"))
	clang, err := exec.LookPath("clang-14")
	if err != nil {
		t.Skip("clang-14 not installed")
	}
	ver, err := exec.Command(clang, "--version").Output()
	if err != nil {
		t.Skipf("clang-14 --version: %v", err)
	}
	v, _, _ := strings.Cut(string(ver), "\n")
	if !strings.HasPrefix(string(first), "// "+v+" ") {
		t.Skipf("kernels.ptx was made by another clang (%q), this one is %q", first, v)
	}
	out := filepath.Join(t.TempDir(), "k.ptx")
	cmd := exec.Command(clang, "-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_80", "-nocudainc", "-nocudalib",
		"-O3", "-S", "-o", out, "kernels.cu")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clang-14: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := bytes.Cut(ptx, []byte("\n"))
	if !bytes.Equal(got, body) {
		t.Fatal("kernels.ptx is out of date with kernels.cu: run `make -f cuda.mk ptx` (scripts/build-ptx.sh)")
	}
}

// TestNames checks that Names lists exactly the kernels of kernels.cu, and that
// the committed PTX has each as an entry.
func TestNames(t *testing.T) {
	re := regexp.MustCompile(`extern "C" __global__ void (\w+)\(`)
	var found []string
	for _, m := range re.FindAllStringSubmatch(Source, -1) {
		found = append(found, m[1])
	}
	if strings.Join(found, ",") != strings.Join(Names, ",") {
		t.Errorf("kernels.cu defines %v, Names lists %v", found, Names)
	}
	ptx, err := os.ReadFile("kernels.ptx")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range Names {
		if !bytes.Contains(ptx, []byte(".visible .entry "+n+"(")) {
			t.Errorf("kernels.ptx lacks entry %s", n)
		}
	}
}
