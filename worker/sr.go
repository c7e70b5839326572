package worker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/model"
)

// SROptions configure super-resolution with a trained model.
type SROptions struct {
	// Tile is the LR tile side (0: 64). Memory grows with the tile, not the image.
	Tile int
	// Overlap is the minimum LR overlap of neighbouring tiles (< 0 or unset: default).
	Overlap *int
	// Seed drives the sampler's noise (tile i of every image uses stream (Seed, i)).
	Seed int64
	// OnStep is called after every denoising step (progress, profiling).
	OnStep func()
	// OnTile is called after every tile with (done, total).
	OnTile func(done, total int)
	// Log receives messages (default slog.Default()).
	Log *slog.Logger
	// Backend, when set, replaces the model.backend stored in the checkpoint's
	// configuration for LoadSR (auto, cpu or cuda; see NewNet).
	Backend string
	// Sampler is the diffusion sampler (zero: DDPM). LoadSR refuses one that is
	// unsound for the checkpoint's modulation (model.Sampler.Sound).
	Sampler model.Sampler
}

// SR super-resolves LR images with a trained model: with the diffusion sampler when
// the model's U-Net is trained, or with the RRDB's own x4 head for an RRDB-stage
// checkpoint ("RRDB-only"). It implements Upscaler.
type SR struct {
	m     *model.SRDiff
	net   Net
	rrdb  bool
	opt   SROptions
	Meta  checkpoints.Meta
	Steps int // denoising steps per tile (0 for RRDB-only)
}

// NewSR wraps a CPU model. rrdbOnly selects the RRDB head instead of the diffusion sampler.
func NewSR(m *model.SRDiff, rrdbOnly bool, opt SROptions) *SR {
	return NewSRNet(CPUNet(m), rrdbOnly, opt)
}

// NewSRNet is NewSR for a Net (CPU or GPU).
func NewSRNet(net Net, rrdbOnly bool, opt SROptions) *SR {
	m := net.Model()
	s := &SR{m: m, net: net, rrdb: rrdbOnly, opt: opt}
	if !rrdbOnly {
		s.Steps = len(opt.Sampler.Timesteps(m.Schedule().T))
	}
	return s
}

// Close releases the Net's device, if any.
func (s *SR) Close() error { return s.net.Close() }

// Backend names where s computes (Net.Backend).
func (s *SR) Backend() string { return s.net.Backend() }

// ConfigFromYAML parses a configuration stored in a checkpoint or run directory.
func ConfigFromYAML(data string, origin string) (configs.Config, error) {
	f, err := os.CreateTemp("", "samdiffsr-config-*.yaml")
	if err != nil {
		return configs.Config{}, fmt.Errorf("worker: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return configs.Config{}, fmt.Errorf("worker: %w", err)
	}
	f.Close()
	cfg, err := configs.LoadFiles(f.Name())
	if err != nil {
		return configs.Config{}, fmt.Errorf("worker: configuration stored in %s: %w", origin, err)
	}
	return cfg, nil
}

// ResolveCheckpoint maps a --checkpoint argument to what checkpoints.Load reads: a
// model.safetensors file as it is; a run directory made by `samdiffsr train` (RUN
// with diffusion/ and rrdb/ stage folders: the latest diffusion checkpoint, else the
// latest RRDB one); a stage or checkpoints folder (its latest complete checkpoint);
// or a checkpoint folder. When newer checkpoints were passed over because they are
// incomplete or damaged, a warning names them and the one used. sr, eval and the
// diffusion stage's --rrdb all resolve through here.
func ResolveCheckpoint(path string, log *slog.Logger) (string, error) {
	if log == nil {
		log = slog.Default()
	}
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		return path, nil
	}
	for _, stage := range []string{StageDiffusion, StageRRDB} {
		d := filepath.Join(path, stage)
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			c, err := latestCheckpoint(d, log)
			if err == nil {
				return c, nil
			}
			if es, lerr := checkpoints.List(d); lerr == nil && len(es) > 0 {
				log.Warn("no usable checkpoint in this stage folder; trying the next stage", "folder", d, "reason", err.Error())
			}
		}
	}
	for _, f := range []string{checkpoints.ManifestFile, checkpoints.ModelFile} {
		if _, err := os.Stat(filepath.Join(path, f)); err == nil {
			return path, nil
		}
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("worker: checkpoint %s: %w (pass a checkpoint folder, a run directory or a model.safetensors file)", path, err)
	}
	return latestCheckpoint(path, log)
}

// latestCheckpoint is checkpoints.Latest with a warning when it falls back past newer,
// incomplete or damaged checkpoints.
func latestCheckpoint(dir string, log *slog.Logger) (string, error) {
	latest, skipped, err := checkpoints.LatestSkipped(dir)
	if err != nil {
		return "", err
	}
	for _, e := range skipped {
		log.Warn("newer checkpoint skipped: it is incomplete or damaged; falling back to an older one",
			"skipped", e.Dir, "reason", e.Err.Error(), "using", latest)
	}
	return latest, nil
}

// LoadModel loads a checkpoint (see ResolveCheckpoint) into a new model built from
// the configuration stored in it. It reports whether the checkpoint is RRDB-only.
// The model is the CPU one whatever model.backend the checkpoint recorded.
func LoadModel(path string) (*model.SRDiff, *checkpoints.Checkpoint, bool, error) {
	cfg, ck, err := loadCheckpointConfig(path, nil)
	if err != nil {
		return nil, nil, false, err
	}
	m, err := newCPUModel(cfg, cfg.Seed)
	if err != nil {
		return nil, nil, false, err
	}
	rrdbOnly := ck.Meta.Stage == StageRRDB
	if err := m.LoadWeights(toModelTensors(ck.Model), rrdbOnly); err != nil {
		return nil, nil, false, fmt.Errorf("worker: load weights from %s: %w", ck.Dir, err)
	}
	return m, ck, rrdbOnly, nil
}

// loadCheckpointConfig loads a checkpoint (see ResolveCheckpoint) and the
// configuration stored in it.
func loadCheckpointConfig(path string, log *slog.Logger) (configs.Config, *checkpoints.Checkpoint, error) {
	if log == nil {
		log = slog.Default()
	}
	src, err := ResolveCheckpoint(path, log)
	if err != nil {
		return configs.Config{}, nil, err
	}
	ck, err := checkpoints.Load(src)
	if err != nil {
		return configs.Config{}, nil, err
	}
	if _, err := os.Stat(filepath.Join(ck.Dir, checkpoints.ManifestFile)); err != nil {
		log.Warn("no manifest.json beside the weights: their integrity is not verified", "weights", src)
	}
	if ck.Meta.Config == "" {
		return configs.Config{}, nil, fmt.Errorf("worker: checkpoint %s stores no configuration; it was not written by samdiffsr train", src)
	}
	cfg, err := ConfigFromYAML(ck.Meta.Config, src)
	if err != nil {
		return configs.Config{}, nil, err
	}
	return cfg, ck, nil
}

// LoadSR loads a checkpoint for super-resolution on the backend opt.Backend (else
// the checkpoint's model.backend) selects (NewNet). Close the SR when done.
func LoadSR(path string, opt SROptions) (*SR, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	cfg, ck, err := loadCheckpointConfig(path, log)
	if err != nil {
		return nil, err
	}
	if opt.Backend != "" {
		cfg.Model.Backend = opt.Backend
	}
	net, err := NewNet(cfg, cfg.Seed, log)
	if err != nil {
		return nil, err
	}
	rrdbOnly := ck.Meta.Stage == StageRRDB
	if err := opt.Sampler.Sound(net.Model().Modulation()); err != nil && !rrdbOnly {
		net.Close()
		return nil, fmt.Errorf("worker: checkpoint %s: %w", ck.Dir, err)
	}
	if err := net.Model().LoadWeights(toModelTensors(ck.Model), rrdbOnly); err != nil {
		net.Close()
		return nil, fmt.Errorf("worker: load weights from %s: %w", ck.Dir, err)
	}
	if err := net.PushValues(); err != nil {
		net.Close()
		return nil, fmt.Errorf("worker: load weights from %s: %w", ck.Dir, err)
	}
	s := NewSRNet(net, rrdbOnly, opt)
	s.Meta = ck.Meta
	mode := "diffusion sampler"
	if rrdbOnly {
		mode = "RRDB only"
	}
	log.Info("loaded checkpoint", "dir", ck.Dir, "step", ck.Meta.Step, "stage", ck.Meta.Stage, "mode", mode, "backend", net.Backend())
	return s, nil
}

// RRDBOnly reports whether s uses the RRDB head instead of the diffusion sampler.
func (s *SR) RRDBOnly() bool { return s.rrdb }

// TileOptions returns the tiling s uses.
func (s *SR) TileOptions() TileOptions {
	o := TileOptions{Tile: s.opt.Tile, Overlap: -1, Multiple: s.m.Multiple() / 4, OnStep: s.opt.OnStep, OnTile: s.opt.OnTile}
	if o.Multiple < 1 {
		o.Multiple = 1
	}
	if s.opt.Overlap != nil {
		o.Overlap = *s.opt.Overlap
	}
	return o
}

// Upscale implements Upscaler: x4 of lr, tile by tile.
func (s *SR) Upscale(ctx context.Context, lr *dataset.RGB) (*dataset.RGB, error) {
	return Tiled(ctx, lr, s.TileOptions(), s.tile)
}

func (s *SR) tile(ctx context.Context, lr *dataset.RGB, index int, onStep func()) ([]float32, error) {
	lrT, upT, err := LRTensors(lr)
	if err != nil {
		return nil, err
	}
	if s.rrdb {
		return s.net.RRDBForward(lrT, 1, lr.H, lr.W)
	}
	rng := rand.New(rand.NewPCG(uint64(s.opt.Seed), uint64(index)))
	var cb func(int)
	if onStep != nil {
		cb = func(int) { onStep() }
	}
	return s.net.Sample(ctx, s.opt.Sampler, lrT, upT, 1, 4*lr.H, 4*lr.W, rng, cb)
}

// samplerFor is the sampler cfg's sr section selects, checked against the model's
// schedule and modulation.
func samplerFor(cfg configs.Config, m *model.SRDiff) (model.Sampler, error) {
	s, err := model.ParseSampler(cfg.SR.Sampler, cfg.SR.Steps, cfg.SR.Eta, m.Schedule().T)
	if err != nil {
		return s, err
	}
	return s, s.Sound(m.Modulation())
}

// SamplerFromConfig is the sampler of cfg's sr section (sr.sampler, sr.steps,
// sr.eta) for a diffusion of T steps; whether it suits a checkpoint's modulation
// is LoadSR's check.
func SamplerFromConfig(cfg configs.Config, T int) (model.Sampler, error) {
	return model.ParseSampler(cfg.SR.Sampler, cfg.SR.Steps, cfg.SR.Eta, T)
}

// LRTensors converts an LR image to the model's inputs (METHOD §1): lr in [-1, 1]
// (uint8 as ToTensor+Normalize) and up = 2·imresize(LR/256, 4) - 1, both NCHW with N=1.
func LRTensors(lr *dataset.RGB) (lrT, upT []float32, err error) {
	n := lr.W * lr.H
	lrT = make([]float32, 3*n)
	src := make([]float64, 3*n)
	for i := 0; i < n; i++ {
		for c := 0; c < 3; c++ {
			v := lr.Pix[3*i+c]
			lrT[c*n+i] = dataset.PixelToFloat(v)
			src[3*i+c] = float64(v) / 256
		}
	}
	r, err := dataset.NewResizer(lr.W, lr.H, 4)
	if err != nil {
		return nil, nil, err
	}
	N := 16 * n
	dst := make([]float64, 3*N)
	if err := r.ResizeFloat(src, 3, dst, nil); err != nil {
		return nil, nil, err
	}
	upT = make([]float32, 3*N)
	for i := 0; i < N; i++ {
		for c := 0; c < 3; c++ {
			upT[c*N+i] = float32(2*dst[3*i+c] - 1)
		}
	}
	return lrT, upT, nil
}

// TensorToRGB converts a 1×3×h×w tensor in [-1, 1] to an image: round((x+1)·127.5),
// clipped (METHOD §5).
func TensorToRGB(t []float32, w, h int) *dataset.RGB {
	out := dataset.NewRGB(w, h)
	n := w * h
	for i := 0; i < n; i++ {
		for c := 0; c < 3; c++ {
			out.Pix[3*i+c] = toUint8(t[c*n+i])
		}
	}
	return out
}

func toModelTensors(ts map[string]checkpoints.Tensor) []model.Tensor {
	out := make([]model.Tensor, 0, len(ts))
	for name, t := range ts {
		out = append(out, model.Tensor{Name: name, Shape: t.Shape, Data: t.Data})
	}
	return out
}

func fromModelTensors(ts []model.Tensor) map[string]checkpoints.Tensor {
	out := make(map[string]checkpoints.Tensor, len(ts))
	for _, t := range ts {
		out[t.Name] = checkpoints.Tensor{Shape: t.Shape, Data: t.Data}
	}
	return out
}

func paramTensors(ps []*model.Param) map[string]checkpoints.Tensor {
	out := make(map[string]checkpoints.Tensor, len(ps))
	for _, p := range ps {
		out[p.Name] = checkpoints.Tensor{Shape: append([]int(nil), p.Shape...), Data: append([]float32(nil), p.Data...)}
	}
	return out
}
