package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/model"
)

// MethodBenchOptions configure MethodBench, the ablation of the modulations at
// equal budget (issue 17): one configuration, seed and data for all, the diffusion
// stage of each modulation trained to every budget from the same RRDB.
type MethodBenchOptions struct {
	// Config is the configuration every run shares; data.root, data.val_root,
	// masks.dir, train.out and diffusion.modulation are set per run.
	Config configs.Config
	// Photos is a folder of photographs (PNG/JPEG); TrainPhotos of them (sorted
	// by name, the rest held out) give TrainCrops random HR crops of CropSize
	// pixels, the held-out ones ValCrops crops of Config.Data.ValSize.
	Photos               string
	TrainPhotos          int
	TrainCrops, ValCrops int
	CropSize             int
	Out                  string
	Budgets              []int
	Modulations          []string
	DDIMSteps            int
	Log                  *slog.Logger
	Progress             io.Writer
	OnRow                func(MethodBenchRow)
}

// MethodBenchRow is one line of the ablation: a modulation at a budget, sampled
// with one sampler.
type MethodBenchRow struct {
	Modulation string  `json:"modulation"`
	Steps      int     `json:"steps"`
	Sampler    string  `json:"sampler"`
	PSNRY      float64 `json:"psnr_y"`
	SSIMY      float64 `json:"ssim_y"`
	// BicubicPSNRY and BicubicSSIMY are the same images upscaled by bicubic.
	BicubicPSNRY float64 `json:"bicubic_psnr_y"`
	BicubicSSIMY float64 `json:"bicubic_ssim_y"`
	// LossByT is the training loss by timestep band over the last fifth of the
	// steps before the budget; X0 the denoiser's x̂0 quality (validation images).
	LossByT []BandLoss  `json:"loss_by_t"`
	X0      []X0Quality `json:"x0_psnr_y"`
	// SampleSeconds is the wall time of sampling all validation images.
	SampleSeconds float64 `json:"sample_s"`
	// Sound is false for DDIM on the paper's modulation (measured anyway).
	Sound bool `json:"sound"`
}

// MethodBench runs the ablation and returns its rows (also passed to OnRow as
// they come): for every modulation, the diffusion stage trained to the largest
// budget with a checkpoint at every budget, each evaluated with DDPM and with
// DDIM (DDIMSteps steps, η 0) on the held-out crops.
func MethodBench(ctx context.Context, o MethodBenchOptions) ([]MethodBenchRow, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	if len(o.Budgets) == 0 || len(o.Modulations) == 0 {
		return nil, fmt.Errorf("worker: bench method needs budgets and modulations")
	}
	budgets := slices.Clone(o.Budgets)
	slices.Sort(budgets)
	cfg := o.Config
	train, val, err := methodBenchData(o)
	if err != nil {
		return nil, err
	}
	cfg.Data.Root, cfg.Data.ValRoot = train, val
	cfg.Data.CacheDir = filepath.Join(o.Out, "cache")
	cfg.Masks.Dir = filepath.Join(o.Out, "masks")
	cfg.Train.Steps = budgets[len(budgets)-1]
	// A checkpoint at every budget: every gcd of them steps, all kept.
	every := 0
	for _, b := range budgets {
		every = gcd(every, b)
	}
	cfg.Train.CkptEvery, cfg.Train.ValEvery, cfg.Train.KeepCheckpoints = every, 0, 0
	rrdbRun := filepath.Join(o.Out, "rrdb")
	cfg.Train.Out = rrdbRun
	if _, err := Train(ctx, TrainOptions{Config: cfg, Stage: StageRRDB, Run: rrdbRun, Log: log, Progress: o.Progress}); err != nil {
		return nil, err
	}
	rrdb, err := checkpoints.Latest(StageDir(rrdbRun, StageRRDB))
	if err != nil {
		return nil, err
	}
	var rows []MethodBenchRow
	for _, mod := range o.Modulations {
		c := cfg
		c.Diffusion.Modulation = mod
		c.Train.Out = filepath.Join(o.Out, mod)
		_, err := Train(ctx, TrainOptions{Config: c, Stage: StageDiffusion, Run: c.Train.Out, RRDB: rrdb, Log: log, Progress: o.Progress,
			EnsureMasks: func(ctx context.Context, images []dataset.Image, dir string) error {
				return EnsureBuiltinMasks(ctx, images, dir, c.Masks, log)
			}})
		if err != nil {
			return rows, err
		}
		for _, b := range budgets {
			rs, err := methodBenchEval(ctx, c, b, o.DDIMSteps, log)
			if err != nil {
				return rows, err
			}
			for _, r := range rs {
				if o.OnRow != nil {
					o.OnRow(r)
				}
			}
			rows = append(rows, rs...)
		}
	}
	return rows, nil
}

// methodBenchEval evaluates the checkpoint of step b of c's diffusion run with DDPM
// and DDIM on c's validation crops.
func methodBenchEval(ctx context.Context, c configs.Config, b, ddimSteps int, log *slog.Logger) ([]MethodBenchRow, error) {
	dir := StageDir(c.Train.Out, StageDiffusion)
	ck, err := checkpoints.Load(filepath.Join(dir, checkpoints.SubDir, checkpoints.DirName(int64(b))))
	if err != nil {
		return nil, err
	}
	net, err := NewNet(c, c.Seed, log)
	if err != nil {
		return nil, err
	}
	defer net.Close()
	if err := net.Model().LoadWeights(toModelTensors(ck.Model), false); err != nil {
		return nil, err
	}
	if err := net.PushValues(); err != nil {
		return nil, err
	}
	vs, err := loadValSet(c, net.Model().Multiple(), log)
	if err != nil {
		return nil, err
	}
	if vs == nil {
		return nil, fmt.Errorf("worker: bench method: no validation crops in %s", c.Data.ValRoot)
	}
	recs, err := ReadMetrics(filepath.Join(dir, MetricsFile))
	if err != nil {
		return nil, err
	}
	bands := windowBands(recs, lossBands(net.Model().Schedule().T), b-max(b/5, 1), b)
	mod := net.Model().Modulation()
	var rows []MethodBenchRow
	for _, s := range []model.Sampler{{}, {DDIM: true, Steps: ddimSteps}} {
		grids := filepath.Join(dir, "bench-"+map[bool]string{false: "ddpm", true: "ddim"}[s.DDIM])
		if err := os.MkdirAll(grids, 0o755); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		t0 := time.Now()
		v, err := validate(ctx, net, false, s, vs, c.Seed, b, grids)
		if err != nil {
			return nil, err
		}
		rows = append(rows, MethodBenchRow{Modulation: mod.String(), Steps: b, Sampler: s.String(), PSNRY: v.PSNRY, SSIMY: v.SSIMY,
			BicubicPSNRY: v.BicubicPSNRY, BicubicSSIMY: v.BicubicSSIMY, LossByT: bands, X0: v.X0,
			SampleSeconds: time.Since(t0).Seconds(), Sound: s.Sound(mod) == nil})
	}
	return rows, nil
}

// windowBands is the loss by band over the metrics lines of steps (from, to].
func windowBands(recs []MetricsRecord, bands [][2]int, from, to int) []BandLoss {
	tot := newBandTotals(len(bands))
	for _, r := range recs {
		if r.Step <= from || r.Step > to {
			continue
		}
		for _, bl := range r.LossByT {
			k := bandOf(bands, bl.From)
			tot.Sum[k] += bl.Loss * float64(bl.N)
			tot.N[k] += float64(bl.N)
		}
	}
	return bandLosses(bands, tot)
}

// methodBenchData cuts the crops of o.Photos into o.Out/data/{train,val} (once:
// an existing folder is kept) and returns the two folders.
func methodBenchData(o MethodBenchOptions) (string, string, error) {
	l, err := dataset.Discover(o.Photos)
	if err != nil {
		return "", "", fmt.Errorf("worker: bench method photos: %w", err)
	}
	ims := l.Images
	if len(ims) <= o.TrainPhotos {
		return "", "", fmt.Errorf("worker: bench method: %d photos in %s, need more than %d (the rest are held out)", len(ims), o.Photos, o.TrainPhotos)
	}
	train, val := filepath.Join(o.Out, "data", "train"), filepath.Join(o.Out, "data", "val")
	rng := rand.New(rand.NewPCG(uint64(o.Config.Seed), 17))
	// Crops are the most detailed of a few random candidates: a sky crop is
	// bicubic's best case (40+ dB) and says nothing about SR.
	for _, part := range []struct {
		dir       string
		ims       []dataset.Image
		crops, sz int
	}{{train, ims[:o.TrainPhotos], o.TrainCrops, o.CropSize}, {val, ims[o.TrainPhotos:], o.ValCrops, o.Config.Data.ValSize}} {
		if _, err := os.Stat(part.dir); err == nil {
			continue
		}
		tmp := part.dir + ".tmp"
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return "", "", fmt.Errorf("worker: %w", err)
		}
		for i, im := range part.ims {
			full, err := dataset.LoadRGB(im.HRPath)
			if err != nil {
				return "", "", err
			}
			if full.W < part.sz || full.H < part.sz {
				return "", "", fmt.Errorf("worker: bench method: photo %s is smaller than the %d-pixel crop", im.HRPath, part.sz)
			}
			for k := i; k < part.crops; k += len(part.ims) {
				crop := detailedCrop(full, part.sz, rng)
				if err := dataset.SavePNG(filepath.Join(tmp, fmt.Sprintf("%s_%03d.png", im.ID, k)), crop); err != nil {
					return "", "", err
				}
			}
		}
		if err := os.Rename(tmp, part.dir); err != nil {
			return "", "", fmt.Errorf("worker: %w", err)
		}
	}
	return train, val, nil
}

// detailedCrop returns the sz×sz crop of im with the most detail (mean absolute
// difference of horizontally and vertically adjacent samples) of 6 random ones.
func detailedCrop(im *dataset.RGB, sz int, rng *rand.Rand) *dataset.RGB {
	var best *dataset.RGB
	bestD := -1.0
	for range 6 {
		c := im.Crop(rng.IntN(im.W-sz+1), rng.IntN(im.H-sz+1), sz, sz)
		var d float64
		for y := 0; y+1 < c.H; y++ {
			for x := 0; x+1 < c.W; x++ {
				for ch := 0; ch < 3; ch++ {
					v := float64(c.Pix[(y*c.W+x)*3+ch])
					d += math.Abs(v-float64(c.Pix[(y*c.W+x+1)*3+ch])) + math.Abs(v-float64(c.Pix[((y+1)*c.W+x)*3+ch]))
				}
			}
		}
		if d > bestD {
			best, bestD = c, d
		}
	}
	return best
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
