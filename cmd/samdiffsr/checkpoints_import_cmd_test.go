package main

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/model"
)

// torchPython returns a Python that imports torch, or skips the test.
func torchPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if p, err := exec.LookPath(py); err == nil && exec.Command(p, "-c", "import torch").Run() == nil {
			return p
		}
	}
	t.Skip("no python3 with torch (apt-get install -y python3-torch); skipping the PyTorch checkpoint test")
	return ""
}

// refCheckpointScript writes reference-layout checkpoints from the weights Go gives
// it (names and shapes in the reference's state-dict order, raw float32), as the
// reference's trainer saves them: schedule buffers computed as GaussianDiffusion
// computes them, then the parameters; a real torch.optim.Adam over all parameters
// (the U-Net ones get gradients, the RRDB's none, as with fix_rrdb) after two steps.
const refCheckpointScript = `
import collections, json, math, os, sys
import numpy as np, torch

src, out = sys.argv[1], sys.argv[2]
meta = json.load(open(os.path.join(src, "params.json")))
raw = np.fromfile(os.path.join(src, "params.f32"), dtype="<f4")
sd, off = collections.OrderedDict(), 0
T, s = 100, 0.008
steps = T + 1
x = np.linspace(0, steps, steps)
ac = np.cos(((x / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
ac = ac / ac[0]
betas = np.clip(1 - (ac[1:] / ac[:-1]), 0, 0.999)
alphas = 1. - betas
acp = np.cumprod(alphas, axis=0)
acp_prev = np.append(1., acp[:-1])
f = lambda a: torch.tensor(a, dtype=torch.float32)
sd["betas"] = f(betas)
sd["alphas_cumprod"] = f(acp)
sd["alphas_cumprod_prev"] = f(acp_prev)
sd["sqrt_alphas_cumprod"] = f(np.sqrt(acp))
sd["sqrt_one_minus_alphas_cumprod"] = f(np.sqrt(1. - acp))
sd["log_one_minus_alphas_cumprod"] = f(np.log(1. - acp))
sd["sqrt_recip_alphas_cumprod"] = f(np.sqrt(1. / acp))
sd["sqrt_recipm1_alphas_cumprod"] = f(np.sqrt(1. / acp - 1))
pv = betas * (1. - acp_prev) / (1. - acp)
sd["posterior_variance"] = f(pv)
sd["posterior_log_variance_clipped"] = f(np.log(np.maximum(pv, 1e-20)))
sd["posterior_mean_coef1"] = f(betas * np.sqrt(acp_prev) / (1. - acp))
sd["posterior_mean_coef2"] = f((1. - acp_prev) * np.sqrt(alphas) / (1. - acp))
params = []
for p in meta:
    n = int(np.prod(p["shape"]))
    t = torch.from_numpy(raw[off:off + n].copy()).reshape(p["shape"])
    off += n
    sd[p["name"]] = t
    params.append(torch.nn.Parameter(t.clone()))
assert off == raw.size
opt = torch.optim.Adam(params, lr=2e-4)
g = torch.Generator().manual_seed(11)
for _ in range(2):
    for p, m in zip(params, meta):
        p.grad = torch.randn(p.shape, generator=g) if m["name"].startswith("denoise_fn.") else None
    opt.step()
moments = []
for i, m in enumerate(meta):
    st = opt.state.get(params[i], {})
    if st:
        moments.append(st["exp_avg"].flatten())
        moments.append(st["exp_avg_sq"].flatten())
torch.cat(moments).numpy().astype("<f4").tofile(os.path.join(out, "moments.f32"))
ckpt = {"global_step": 2, "optimizer_states": [opt.state_dict()], "state_dict": {"model": sd}}
torch.save(ckpt, os.path.join(out, "ref_legacy.ckpt"), _use_new_zipfile_serialization=False)
torch.save(ckpt, os.path.join(out, "ref_zip.ckpt"))
bare = collections.OrderedDict(("module." + k, v) for k, v in sd.items())
torch.save(bare, os.path.join(out, "bare_module.pt"))
rrdb = collections.OrderedDict((k[len("rrdb."):], v) for k, v in sd.items() if k.startswith("rrdb."))
torch.save({"global_step": 5, "state_dict": {"model": rrdb}}, os.path.join(out, "rrdb_legacy.ckpt"), _use_new_zipfile_serialization=False)
bad = collections.OrderedDict(sd)
bad["denoise_fn.extra.weight"] = torch.zeros(2)
del bad["rrdb.conv_last.bias"]
torch.save({"state_dict": {"model": bad}}, os.path.join(out, "bad_names.ckpt"))
`

// importTestConfig is a tiny model, with data under dir for a short resumed run.
func importTestConfig(dir string) configs.Config {
	cfg := configs.Default()
	cfg.Model.RRDB = configs.RRDB{NF: 8, NB: 3, GC: 4}
	cfg.Model.UNet = configs.UNet{Dim: 8, DimMults: []int{1, 2}}
	cfg.Data.Root, cfg.Data.ValRoot = filepath.Join(dir, "data", "train"), filepath.Join(dir, "data", "val")
	cfg.Data.PatchSize, cfg.Data.TileSize, cfg.Data.TileThreshold = 32, 64, 32
	cfg.Data.ValImages, cfg.Data.ValSize = 1, 32
	cfg.Masks.Dir = filepath.Join(dir, "masks")
	cfg.Train.BatchSize, cfg.Train.ValEvery, cfg.Train.CkptEvery = 2, 1000, 1000
	return cfg
}

// TestCheckpointsImportTorch: reference-layout checkpoints written by PyTorch in both
// torch.save formats import into models whose RRDB output and diffusion loss equal,
// bit for bit, those of the same weights loaded from safetensors; the Adam moments
// are PyTorch's exactly.
func TestCheckpointsImportTorch(t *testing.T) {
	py := torchPython(t)
	dir := t.TempDir()
	cfg := importTestConfig(dir)
	ref, err := model.New(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	// The reference's named_parameters order: denoise_fn (U-Net), then rrdb.
	order := append(append([]*model.Param(nil), ref.UNetParams()...), ref.RRDBParams()...)
	type pm struct {
		Name  string `json:"name"`
		Shape []int  `json:"shape"`
	}
	var meta []pm
	var raw []byte
	for _, p := range order {
		meta = append(meta, pm{p.Name, p.Shape})
		for _, v := range p.Data {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
		}
	}
	js, _ := json.Marshal(meta)
	os.WriteFile(filepath.Join(dir, "params.json"), js, 0o644)
	os.WriteFile(filepath.Join(dir, "params.f32"), raw, 0o644)
	script := filepath.Join(dir, "make_ref.py")
	os.WriteFile(script, []byte(refCheckpointScript), 0o644)
	if out, err := exec.Command(py, script, dir, dir).CombinedOutput(); err != nil {
		t.Fatalf("PyTorch could not write the checkpoints: %v\n%s", err, out)
	}
	cfgPath := filepath.Join(dir, "tiny.yaml")
	y, _ := cfg.YAML()
	os.WriteFile(cfgPath, y, 0o644)

	// The same weights through samdiffsr's own safetensors checkpoint.
	st := checkpoints.Checkpoint{Meta: checkpoints.Meta{Step: 2, Stage: "diffusion"}, Model: map[string]checkpoints.Tensor{}}
	for _, p := range ref.Params() {
		st.Model[p.Name] = checkpoints.Tensor{Shape: p.Shape, Data: p.Data}
	}
	stDir := filepath.Join(dir, "st", checkpoints.DirName(2))
	if err := checkpoints.Save(stDir, st); err != nil {
		t.Fatal(err)
	}
	want := evalModel(t, cfg, stDir)

	moments := readF32(t, filepath.Join(dir, "moments.f32"))
	for _, file := range []string{"ref_legacy.ckpt", "ref_zip.ckpt"} {
		run := filepath.Join(dir, "run_"+file)
		stdout, stderr, code := runCLI(t, "--log-level", "error", "--config", cfgPath, "checkpoints", "import", filepath.Join(dir, file), "--out", run)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", file, code, stdout, stderr)
		}
		format := map[string]string{"ref_legacy.ckpt": "legacy", "ref_zip.ckpt": "zip"}[file]
		if !strings.Contains(stdout, "torch "+format+" format, state_dict.model") || !strings.Contains(stdout, "Adam step 2") {
			t.Errorf("%s: output %q", file, stdout)
		}
		ckDir := filepath.Join(run, "diffusion", checkpoints.SubDir, checkpoints.DirName(2))
		got := evalModel(t, cfg, ckDir)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the imported model's RRDB output / loss differ from the same weights loaded from safetensors", file)
		}
		ck, err := checkpoints.Load(ckDir)
		if err != nil {
			t.Fatal(err)
		}
		if ck.OptimizerMeta["adam_step"] != "2" || ck.Meta.Step != 2 || ck.Meta.ConfigHash != cfg.Hash() {
			t.Errorf("%s: adam_step %q step %d hash %s", file, ck.OptimizerMeta["adam_step"], ck.Meta.Step, ck.Meta.ConfigHash)
		}
		// PyTorch's moments, in named_parameters order (U-Net params only have state).
		var flat []float32
		for _, p := range ref.UNetParams() {
			flat = append(flat, ck.Optimizer[p.Name+".exp_avg"].Data...)
			flat = append(flat, ck.Optimizer[p.Name+".exp_avg_sq"].Data...)
		}
		if !reflect.DeepEqual(flat, moments) || len(ck.Optimizer) != 2*len(ref.UNetParams()) {
			t.Errorf("%s: Adam moments differ from PyTorch's (%d tensors)", file, len(ck.Optimizer))
		}
		a := model.NewAdam()
		var ts []model.Tensor
		for n, x := range ck.Optimizer {
			ts = append(ts, model.Tensor{Name: n, Shape: x.Shape, Data: x.Data})
		}
		if err := a.Load(ref.UNetParams(), 2, ts); err != nil {
			t.Errorf("%s: the imported Adam state does not load: %v", file, err)
		}
	}

	// A bare state dict with DataParallel's prefix, sizes taken from the tensors.
	run := filepath.Join(dir, "run_bare")
	stdout, stderr, code := runCLI(t, "--log-level", "error", "checkpoints", "import", filepath.Join(dir, "bare_module.pt"), "--out", run)
	if code != 0 || !strings.Contains(stdout, `"module." prefix removed`) || !strings.Contains(stdout, "nf 8 nb 3 gc 4, U-Net dim 8 dim_mults [1 2]") {
		t.Fatalf("bare: exit %d\n%s%s", code, stdout, stderr)
	}
	bareDir := filepath.Join(run, "diffusion", checkpoints.SubDir, checkpoints.DirName(0))
	if got := evalModel(t, cfg, bareDir); !reflect.DeepEqual(got, want) {
		t.Error("bare state dict: outputs differ")
	}

	// The reference's pretrained RRDB (names without "rrdb.") is an rrdb-stage checkpoint.
	run = filepath.Join(dir, "run_rrdb")
	stdout, stderr, code = runCLI(t, "--log-level", "error", "--config", cfgPath, "checkpoints", "import", filepath.Join(dir, "rrdb_legacy.ckpt"), "--out", run)
	if code != 0 || !strings.Contains(stdout, "stage rrdb") {
		t.Fatalf("rrdb: exit %d\n%s%s", code, stdout, stderr)
	}
	rk, err := checkpoints.Load(filepath.Join(run, "rrdb"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rk.Model) != len(ref.RRDBParams()) || rk.Meta.Stage != "rrdb" || rk.Meta.Step != 5 {
		t.Errorf("rrdb checkpoint: %d tensors, stage %s, step %d", len(rk.Model), rk.Meta.Stage, rk.Meta.Step)
	}
	for _, p := range ref.RRDBParams() {
		if !reflect.DeepEqual(rk.Model[p.Name].Data, p.Data) {
			t.Errorf("rrdb: %s differs", p.Name)
			break
		}
	}

	// Unknown and missing tensors are named; sizes that do not fit the config are listed.
	_, stderr, code = runCLI(t, "--log-level", "error", "--config", cfgPath, "checkpoints", "import", filepath.Join(dir, "bad_names.ckpt"), "--out", filepath.Join(dir, "x"))
	if code != 1 || !strings.Contains(stderr, "denoise_fn.extra.weight") || !strings.Contains(stderr, "rrdb.conv_last.bias") {
		t.Errorf("bad names: exit %d, stderr %q", code, stderr)
	}
	other := importTestConfig(dir)
	other.Model.RRDB.NB = 4
	other.Model.UNet.DimMults = []int{1, 3}
	y, _ = other.YAML()
	otherPath := filepath.Join(dir, "other.yaml")
	os.WriteFile(otherPath, y, 0o644)
	_, stderr, code = runCLI(t, "--log-level", "error", "--config", otherPath, "checkpoints", "import", filepath.Join(dir, "ref_zip.ckpt"), "--out", filepath.Join(dir, "y"))
	if code != 2 || !strings.Contains(stderr, "model.rrdb.nb: config 4, checkpoint 3") || !strings.Contains(stderr, "model.unet.dim_mults: config [1 3], checkpoint [1 2]") {
		t.Errorf("config mismatch: exit %d, stderr %q", code, stderr)
	}
	// Importing twice into the same run is refused rather than overwriting.
	_, stderr, code = runCLI(t, "--log-level", "error", "--config", cfgPath, "checkpoints", "import", filepath.Join(dir, "ref_zip.ckpt"), "--out", filepath.Join(dir, "run_ref_zip.ckpt"))
	if code != 2 || !strings.Contains(stderr, "already exists") {
		t.Errorf("second import: exit %d, stderr %q", code, stderr)
	}

	// train --resume continues the imported run: step 2 -> 3, and Adam goes on from
	// PyTorch's state (its step count 2 -> 3; a fresh Adam would be at 1).
	if _, stderr, code := runCLI(t, "data", "synth", "--out", filepath.Join(dir, "data"), "--n", "2", "--val", "1", "--size", "64x64"); code != 0 {
		t.Fatalf("data synth: %s", stderr)
	}
	run = filepath.Join(dir, "run_ref_legacy.ckpt")
	stdout, stderr, code = runCLI(t, "--log-level", "error", "--config", cfgPath, "train", "--out", run, "--stage", "diffusion", "--resume", "--steps", "3")
	if code != 0 {
		t.Fatalf("train --resume: exit %d\n%s%s", code, stdout, stderr)
	}
	ck3, err := checkpoints.Load(filepath.Join(run, "diffusion"))
	if err != nil {
		t.Fatal(err)
	}
	if ck3.Meta.Step != 3 || ck3.OptimizerMeta["adam_step"] != "3" {
		t.Errorf("after resuming: step %d, adam_step %q; want 3 and 3", ck3.Meta.Step, ck3.OptimizerMeta["adam_step"])
	}
}

// evalModel loads a checkpoint into a fresh model and returns its RRDB output and
// diffusion loss (and U-Net gradients) on a fixed batch.
func evalModel(t *testing.T, cfg configs.Config, dir string) [][]float32 {
	t.Helper()
	m, err := model.New(cfg, 99) // a different seed: every value must come from the file
	if err != nil {
		t.Fatal(err)
	}
	ck, err := checkpoints.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ts []model.Tensor
	for n, x := range ck.Model {
		ts = append(ts, model.Tensor{Name: n, Shape: x.Shape, Data: x.Data})
	}
	if err := m.LoadWeights(ts, false); err != nil {
		t.Fatal(err)
	}
	const n, H, W = 1, 16, 24
	val := func(k int, f float64) []float32 {
		s := make([]float32, k)
		for i := range s {
			s[i] = float32(math.Sin(float64(i)*f)) * 0.9
		}
		return s
	}
	b := &model.Batch{N: n, H: H, W: W, HR: val(3*H*W, 0.37), Up: val(3*H*W, 0.41), LR: val(3*H*W/16, 0.53), E: val(H*W, 0.07)}
	rr, err := m.RRDBForward(b.LR, n, H/4, W/4)
	if err != nil {
		t.Fatal(err)
	}
	rr = append([]float32(nil), rr...)
	loss, err := m.DiffusionLoss(b, []int{37}, val(3*H*W, 0.29))
	if err != nil {
		t.Fatal(err)
	}
	return [][]float32{rr, {loss}, append([]float32(nil), m.UNetGrads()...)}
}

func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}
