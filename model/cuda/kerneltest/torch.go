package kerneltest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/model"
)

// TorchStep is one diffusion training step (METHOD §4) as
// `scripts/torch_unet.py --check` recomputes it in PyTorch: the weights, the
// step's inputs, and our loss and U-Net gradients. The CPU backend
// (TestTorchCheckCPU) and the CUDA backend (model/cuda TestTorchDump) both write it.
type TorchStep struct {
	Model   *model.SRDiff
	N, H, W int       // batch and HR size; the LR is H/4×W/4
	T       []int     // one step per sample
	LR      []float32 // N×3×H/4×W/4, the RRDB input
	XT      []float32 // N×3×H×W, the U-Net input x_t
	Target  []float32 // N×3×H×W, the L1 target n
	// Cond (optional) is our RRDB conditioning, N×condC×H/4×W/4. When present the
	// script compares its own RRDB features with it and feeds it to the U-Net;
	// otherwise the U-Net gets the script's features of LR.
	Cond  []float32
	Loss  float32
	Grads []float32 // the U-Net gradient, UNetParams order (as model.SRDiff.UNetGrads)
}

// Tensors returns the dump's tensors: every parameter under its state-dict
// name ("rrdb.*", "denoise_fn.*"), "grad/<name>" for each U-Net parameter,
// "in/lr", "in/xt", "in/target", "in/t", "in/cond" (when set) and "out/loss".
func (s *TorchStep) Tensors() ([]model.Tensor, error) {
	if s.Model == nil {
		return nil, errors.New("kerneltest: TorchStep without a model")
	}
	n, hw := s.N, s.H*s.W
	lhw := hw / 16
	for _, c := range []struct {
		name string
		got  int
		want int
	}{
		{"T", len(s.T), n}, {"LR", len(s.LR), n * 3 * lhw}, {"XT", len(s.XT), n * 3 * hw},
		{"Target", len(s.Target), n * 3 * hw}, {"Grads", len(s.Grads), len(s.Model.UNetGrads())},
	} {
		if c.got != c.want || c.want == 0 {
			return nil, fmt.Errorf("kerneltest: TorchStep.%s has %d values, want %d (N %d, H %d, W %d)", c.name, c.got, c.want, n, s.H, s.W)
		}
	}
	if len(s.Cond)%(n*lhw) != 0 {
		return nil, fmt.Errorf("kerneltest: TorchStep.Cond has %d values, not a multiple of N·H/4·W/4 = %d", len(s.Cond), n*lhw)
	}
	var ts []model.Tensor
	for _, p := range s.Model.RRDBParams() {
		ts = append(ts, model.Tensor{Name: p.Name, Shape: p.Shape, Data: p.Data})
	}
	off := 0
	for _, p := range s.Model.UNetParams() {
		ts = append(ts, model.Tensor{Name: p.Name, Shape: p.Shape, Data: p.Data},
			model.Tensor{Name: "grad/" + p.Name, Shape: p.Shape, Data: s.Grads[off : off+len(p.Data)]})
		off += len(p.Data)
	}
	tf := make([]float32, n)
	for i, v := range s.T {
		tf[i] = float32(v)
	}
	ts = append(ts,
		model.Tensor{Name: "in/lr", Shape: []int{n, 3, s.H / 4, s.W / 4}, Data: s.LR},
		model.Tensor{Name: "in/xt", Shape: []int{n, 3, s.H, s.W}, Data: s.XT},
		model.Tensor{Name: "in/target", Shape: []int{n, 3, s.H, s.W}, Data: s.Target},
		model.Tensor{Name: "in/t", Shape: []int{n}, Data: tf},
		model.Tensor{Name: "out/loss", Shape: []int{1}, Data: []float32{s.Loss}})
	if s.Cond != nil {
		ts = append(ts, model.Tensor{Name: "in/cond", Shape: []int{n, len(s.Cond) / (n * lhw), s.H / 4, s.W / 4}, Data: s.Cond})
	}
	return ts, nil
}

// Write writes the step to path as safetensors.
func (s *TorchStep) Write(path string) error {
	ts, err := s.Tensors()
	if err != nil {
		return err
	}
	return WriteSafetensors(path, ts)
}

// WriteSafetensors writes float32 tensors to path in the safetensors format (8-byte
// little-endian header length, JSON header padded to 8 bytes, data in the given order).
func WriteSafetensors(path string, ts []model.Tensor) error {
	type entry struct {
		DType   string `json:"dtype"`
		Shape   []int  `json:"shape"`
		Offsets [2]int `json:"data_offsets"`
	}
	hdr := make(map[string]entry, len(ts))
	off := 0
	for _, t := range ts {
		size := 1
		for _, d := range t.Shape {
			size *= d
		}
		if size != len(t.Data) {
			return fmt.Errorf("kerneltest: tensor %s: shape %v holds %d values, data has %d", t.Name, t.Shape, size, len(t.Data))
		}
		if _, dup := hdr[t.Name]; dup {
			return fmt.Errorf("kerneltest: tensor %s written twice", t.Name)
		}
		hdr[t.Name] = entry{DType: "F32", Shape: t.Shape, Offsets: [2]int{off, off + 4*len(t.Data)}}
		off += 4 * len(t.Data)
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		return fmt.Errorf("kerneltest: safetensors header of %s: %w", path, err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	buf := make([]byte, 8, 8+len(h)+off)
	binary.LittleEndian.PutUint64(buf, uint64(len(h)))
	buf = append(buf, h...)
	for _, t := range ts {
		for _, v := range t.Data {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		return fmt.Errorf("kerneltest: %w", err)
	}
	return nil
}

// DiffusionInputs returns x_t and the target n that model.SRDiff.DiffusionLoss
// builds from b, t and noise (x0 = Img2Res(HR, Up), then QSample per sample), for
// a TorchStep of a backend that does not expose them.
func DiffusionInputs(m *model.SRDiff, b *model.Batch, t []int, noise []float32) (xt, target []float32) {
	hw := b.H * b.W
	x0 := make([]float32, b.N*3*hw)
	model.Img2Res(x0, b.HR, b.Up)
	xt, target = make([]float32, len(x0)), make([]float32, len(x0))
	for s := 0; s < b.N; s++ {
		sl := func(a []float32) []float32 { return a[s*3*hw : (s+1)*3*hw] }
		var e []float32
		if m.Modulation() != model.ModNone {
			e = b.E[s*hw : (s+1)*hw]
		}
		m.Schedule().QSample(m.Modulation(), t[s], sl(x0), sl(noise), e, hw, sl(xt), sl(target))
	}
	return xt, target
}

// TorchPython returns a Python interpreter that imports torch: $TORCH_PYTHON, else
// the GPU machine's /opt/torch/.venv/bin/python, python3 on PATH, /usr/bin/python3
// (Debian's python3-torch). Without one the test skips, or fails when
// TORCH_CHECK_REQUIRED=1.
func TorchPython(t testing.TB) string {
	t.Helper()
	cands := []string{"/opt/torch/.venv/bin/python", "python3", "/usr/bin/python3"}
	if p := os.Getenv("TORCH_PYTHON"); p != "" {
		cands = []string{p}
	}
	var tried []string
	for _, c := range cands {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, c, "-c", "import torch; print(torch.__version__)").CombinedOutput()
		cancel()
		if err == nil {
			t.Logf("torch %s (%s)", strings.TrimSpace(string(out)), c)
			return c
		}
		tried = append(tried, c)
	}
	msg := fmt.Sprintf("no Python with torch (tried %s): apt-get install python3-torch, or set TORCH_PYTHON", strings.Join(tried, ", "))
	if os.Getenv("TORCH_CHECK_REQUIRED") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg + " (TORCH_CHECK_REQUIRED=1 makes this a failure)")
	return ""
}

// TorchScript returns the path of scripts/torch_unet.py, found from the working
// directory upwards (a package directory under `go test`, the repository root
// for a test binary run there).
func TorchScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("kerneltest: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "scripts", "torch_unet.py")
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("kerneltest: %w", err)
			}
			return p, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("kerneltest: no go.mod above the working directory: run from inside the repository")
		}
		dir = up
	}
}

// TorchCheck runs `py scripts/torch_unet.py --check dumps...` (at most 5 minutes)
// and returns its output and whether it exited 0.
func TorchCheck(t testing.TB, py string, dumps ...string) (string, bool) {
	t.Helper()
	script, err := TorchScript()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append([]string{script, "--check"}, dumps...)
	out, err := exec.CommandContext(ctx, py, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: %v\n%s", py, strings.Join(args, " "), ctx.Err(), out)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s %s: %v", py, strings.Join(args, " "), err)
	}
	return string(out), err == nil
}
