package kerneltest

import (
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/model"
)

// cpuTorchStep runs one diffusion training step of a tiny model on the CPU
// backend and returns it as a TorchStep (no Cond: the script computes the RRDB
// features from LR). The RRDB has 5 blocks, so the conditioning takes block 2's
// output and the fused trunk; H ≠ W catches a swapped axis.
func cpuTorchStep(t *testing.T) *TorchStep {
	t.Helper()
	cfg := configs.Default()
	cfg.Model.RRDB = configs.RRDB{NF: 8, NB: 5, GC: 4}
	cfg.Model.UNet = configs.UNet{Dim: 8, DimMults: []int{1, 2, 3}}
	m, err := model.New(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	const n, H, W = 2, 24, 32
	rng := rand.New(rand.NewPCG(5, 5))
	uni := func(k int) []float32 {
		s := make([]float32, k)
		for i := range s {
			s[i] = float32(rng.Float64()*2 - 1)
		}
		return s
	}
	b := &model.Batch{N: n, H: H, W: W, HR: uni(n * 3 * H * W), Up: uni(n * 3 * H * W), LR: uni(n * 3 * H * W / 16), E: uni(n * H * W)}
	ts := []int{3, 97}
	noise := make([]float32, n*3*H*W)
	for i := range noise {
		noise[i] = float32(rng.NormFloat64())
	}
	loss, err := m.DiffusionLoss(b, ts, noise)
	if err != nil {
		t.Fatal(err)
	}
	xt, target := DiffusionInputs(m, b, ts, noise)
	return &TorchStep{Model: m, N: n, H: H, W: W, T: ts, LR: b.LR, XT: xt, Target: target,
		Loss: loss, Grads: append([]float32(nil), m.UNetGrads()...)}
}

// TestTorchCheckCPU recomputes a training step of the CPU backend with PyTorch
// (scripts/torch_unet.py --check, the script gpu-check.sh runs against the GPU):
// RRDB features, loss and every U-Net gradient within rel 1e-3. A dump with one
// gradient off by 1% must fail naming it, and one with the Upsample convolutions
// under their pre-rename names (ups.J.2.conv.*) must be refused naming the stale
// tensor. Skips without a Python that imports torch (apt-get install python3-torch).
func TestTorchCheckCPU(t *testing.T) {
	py := TorchPython(t)
	s := cpuTorchStep(t)
	ts, err := s.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good, old, bad := filepath.Join(dir, "good.safetensors"), filepath.Join(dir, "old.safetensors"), filepath.Join(dir, "bad.safetensors")
	if err := WriteSafetensors(good, ts); err != nil {
		t.Fatal(err)
	}
	upsample := regexp.MustCompile(`^(denoise_fn\.ups\.\d+\.2\.conv)\.0\.(weight|bias)$`)
	const victim = "grad/denoise_fn.ups.0.2.conv.0.weight"
	renamed, spoiled := make([]model.Tensor, len(ts)), make([]model.Tensor, len(ts))
	found := 0
	for i, x := range ts {
		renamed[i], spoiled[i] = x, x
		if upsample.MatchString(x.Name) {
			renamed[i].Name = upsample.ReplaceAllString(x.Name, "$1.$2")
			found++
		}
		if x.Name == victim {
			d := append([]float32(nil), x.Data...)
			for j := range d {
				d[j] *= 1.01
			}
			spoiled[i].Data = d
			found++
		}
	}
	if found != 5 { // 2 up levels × weight, bias; the victim
		t.Fatalf("%d Upsample tensors in the dump, want 4 named as the reference's and %s", found-1, victim)
	}
	if err := WriteSafetensors(old, renamed); err != nil {
		t.Fatal(err)
	}
	if err := WriteSafetensors(bad, spoiled); err != nil {
		t.Fatal(err)
	}

	out, ok := TorchCheck(t, py, good)
	t.Logf("torch_unet.py --check:\n%s", out)
	if !ok || !strings.Contains(out, "torch check: PASS") || !strings.Contains(out, "RRDB(8,5,4) features from in/lr") {
		t.Fatalf("the PyTorch check of the CPU step failed:\n%s", out)
	}
	out, ok = TorchCheck(t, py, bad, old)
	if ok || !strings.Contains(out, "FAIL: "+bad+": "+victim) {
		t.Errorf("a gradient off by 1%% was not caught (want a failure naming %s):\n%s", victim, out)
	}
	if !strings.Contains(out, "is the old name of denoise_fn.ups.0.2.conv.0.") {
		t.Errorf("a dump with the pre-rename Upsample names was not refused naming them:\n%s", out)
	}
}

// TestTorchStepErrors checks that a TorchStep or tensor list that does not add
// up is refused with an error naming it, before any file is written.
func TestTorchStepErrors(t *testing.T) {
	s := cpuTorchStep(t)
	short := *s
	short.XT = short.XT[1:]
	if _, err := short.Tensors(); err == nil || !strings.Contains(err.Error(), "TorchStep.XT") {
		t.Errorf("short XT: err %v, want one naming TorchStep.XT", err)
	}
	cond := *s
	cond.Cond = make([]float32, 7)
	if _, err := cond.Tensors(); err == nil || !strings.Contains(err.Error(), "TorchStep.Cond") {
		t.Errorf("bad Cond: err %v, want one naming TorchStep.Cond", err)
	}
	p := filepath.Join(t.TempDir(), "x.safetensors")
	err := WriteSafetensors(p, []model.Tensor{{Name: "w", Shape: []int{2, 3}, Data: make([]float32, 5)}})
	if err == nil || !strings.Contains(err.Error(), "tensor w") {
		t.Errorf("shape mismatch: err %v, want one naming tensor w", err)
	}
	err = WriteSafetensors(p, []model.Tensor{{Name: "w", Shape: []int{1}, Data: []float32{1}}, {Name: "w", Shape: []int{1}, Data: []float32{1}}})
	if err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate name: err %v, want one saying written twice", err)
	}
}
