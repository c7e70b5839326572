//go:build cuda

package cuda

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/model"
	"github.com/samdiffsr/samdiffsr/model/cuda/kerneltest"
)

// TestTorchDump runs one device training step of a small model and writes it as
// a kerneltest.TorchStep: the weights under their state-dict names, the step's
// inputs (LR, x_t, t, target and cond = our RRDB features), our loss and U-Net
// gradients. With SAMDIFFSR_TORCH_DUMP=FILE it writes FILE and stops there
// (scripts/gpu-check.sh then runs `scripts/torch_unet.py --check FILE` with the
// GPU machine's torch); otherwise it checks a temporary dump with
// kerneltest.TorchCheck itself, skipping without a Python that imports torch.
func TestTorchDump(t *testing.T) {
	path := os.Getenv("SAMDIFFSR_TORCH_DUMP")
	var py string
	if path == "" {
		py = kerneltest.TorchPython(t)
		path = filepath.Join(t.TempDir(), "torch-dump.safetensors")
	}
	d := device(t)
	cfg := tinyConfig()
	cfg.Model.UNet.Dim = 16
	m, err := model.New(cfg, 11)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(d, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	const n, H, W = 2, 32, 32
	b, ts, noise := batch(rng, m, n, H, W)
	loss, err := tr.DiffusionLoss(b, ts, noise)
	if err != nil {
		t.Fatal(err)
	}
	grads := make([]float32, len(m.UNetGrads()))
	if err := tr.Grads(grads); err != nil {
		t.Fatal(err)
	}
	cond := make([]float32, n*tr.rrdb.condChannels()*(H/tr.scale)*(W/tr.scale))
	if err := d.Download(cond, tr.bufs.cond); err != nil {
		t.Fatal(err)
	}
	step := kerneltest.TorchStep{Model: m, N: n, H: H, W: W, T: ts, LR: b.LR,
		XT: append([]float32(nil), tr.xt...), Target: append([]float32(nil), tr.target...),
		Cond: cond, Loss: loss, Grads: grads}
	if err := step.Write(path); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (loss %.6f)", path, loss)
	if py == "" {
		return
	}
	out, ok := kerneltest.TorchCheck(t, py, path)
	t.Logf("torch_unet.py --check:\n%s", out)
	if !ok || !strings.Contains(out, "features vs ours") {
		t.Fatalf("the PyTorch check of the device step failed:\n%s", out)
	}
}
