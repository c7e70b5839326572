package worker

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/metrics"
	"github.com/samdiffsr/samdiffsr/model"
)

// openLoader discovers the training images, makes sure masks exist (diffusion stage
// with modulation), packs the tile cache and opens a Loader.
func openLoader(ctx context.Context, cfg configs.Config, stage string, ensureMasks func(context.Context, []dataset.Image, string) error, batch int, log *slog.Logger) (*dataset.Loader, error) {
	l, _, err := openLoaderReport(ctx, cfg, stage, ensureMasks, batch, log)
	return l, err
}

// openLoaderReport is openLoader that also returns the images left out of the
// tile cache (corrupt, too small, without a usable mask), each with why.
func openLoaderReport(ctx context.Context, cfg configs.Config, stage string, ensureMasks func(context.Context, []dataset.Image, string) error, batch int, log *slog.Logger) (*dataset.Loader, []dataset.Problem, error) {
	if cfg.Data.Packed != "" {
		// One process: it holds every shard.
		d, err := openPacked(ctx, cfg, stage, nil, log)
		if err != nil {
			return nil, nil, err
		}
		if _, err := d.place(ctx, []string{"local"}, 0); err != nil {
			d.close()
			return nil, nil, err
		}
		l, err := dataset.NewLoader(d.set, loaderOptions(cfg, batch))
		return l, nil, err
	}
	if cfg.Data.Root == "" {
		return nil, nil, fmt.Errorf("worker: data.root is empty; set it to a folder of training images")
	}
	layout, err := dataset.Discover(cfg.Data.Root)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range layout.Problems {
		log.Warn("dataset problem", "problem", p.String())
	}
	images := layout.Train()
	if len(images) == 0 {
		return nil, nil, fmt.Errorf("worker: no training images under %s", cfg.Data.Root)
	}
	po := dataset.CacheOptions{Dir: dataset.CacheDir(cfg.Data), TileSize: cfg.Data.TileSize, TileThreshold: cfg.Data.TileThreshold, Log: log}
	if stage == StageDiffusion && cfg.Diffusion.Modulation != "none" {
		if cfg.Masks.Dir == "" {
			return nil, nil, fmt.Errorf("worker: masks.dir is empty; the %s modulation needs label maps", cfg.Diffusion.Modulation)
		}
		if ensureMasks != nil {
			if err := ensureMasks(ctx, images, cfg.Masks.Dir); err != nil {
				return nil, nil, err
			}
		}
		md, err := dataset.NewMaskDir(cfg.Masks.Dir, images, dataset.SPEOptions(cfg.Masks, cfg.Data.Scale), 0)
		if err != nil {
			return nil, nil, err
		}
		po.Masks = md
	}
	cache, stats, problems, err := dataset.BuildCache(ctx, images, po)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range problems {
		log.Warn("image left out", "problem", p.String())
	}
	log.Info("training data", "images", stats.Images, "tiles", stats.Tiles, "decoded", stats.Rebuilt, "cache", po.Dir)
	l, err := dataset.NewLoader(cache, loaderOptions(cfg, batch))
	if err != nil {
		cache.Close()
		return nil, nil, err
	}
	return l, problems, nil
}

// valSet holds the held-out images: HR crops, their LR and the bicubic baseline.
type valSet struct {
	ids         []string
	hr, lr, bic []*dataset.RGB
	bicP, bicS  float64
	crop        int
}

// loadValSet reads data.val_root (or the DIV2K validation set under data.root): the
// first data.val_images images, centre-cropped to data.val_size and to a multiple of
// the model's size multiple; LR by the MATLAB-compatible imresize.
func loadValSet(cfg configs.Config, multiple int, log *slog.Logger) (*valSet, error) {
	var images []dataset.Image
	if cfg.Data.ValRoot != "" {
		l, err := dataset.Discover(cfg.Data.ValRoot)
		if err != nil {
			return nil, fmt.Errorf("worker: validation images: %w", err)
		}
		images = l.Images
	} else if l, err := dataset.Discover(cfg.Data.Root); err == nil {
		images = l.Valid()
	}
	if len(images) == 0 {
		log.Warn("no validation images (set data.val_root); validation skipped")
		return nil, nil
	}
	if n := cfg.Data.ValImages; n > 0 && n < len(images) {
		images = images[:n]
	}
	k := max(multiple, 8)
	vs := &valSet{crop: cfg.Eval.CropBorder}
	var bm metrics.Mean
	for _, im := range images {
		full, err := dataset.LoadRGB(im.HRPath)
		if err != nil {
			return nil, err
		}
		w, h := full.W, full.H
		if s := cfg.Data.ValSize; s > 0 {
			w, h = min(w, s), min(h, s)
		}
		w, h = w-w%k, h-h%k
		if w < 16 || h < 16 {
			log.Warn("validation image too small; skipped", "image", im.HRPath)
			continue
		}
		hr := full.Crop((full.W-w)/2, (full.H-h)/2, w, h)
		lr, err := dataset.Imresize(hr, 0.25)
		if err != nil {
			return nil, err
		}
		bic, err := dataset.Imresize(lr, 4)
		if err != nil {
			return nil, err
		}
		p, s, err := metrics.RGB8(w, h, bic.Pix, hr.Pix, vs.crop)
		if err != nil {
			return nil, fmt.Errorf("worker: validation image %s: %w", im.HRPath, err)
		}
		bm.Add(p, s)
		vs.ids = append(vs.ids, im.ID)
		vs.hr, vs.lr, vs.bic = append(vs.hr, hr), append(vs.lr, lr), append(vs.bic, bic)
	}
	if len(vs.ids) == 0 {
		return nil, nil
	}
	vs.bicP, vs.bicS = bm.PSNR(), bm.SSIM()
	return vs, nil
}

// validate super-resolves the validation images (full sampling with sampler, or
// the RRDB head for the RRDB stage), measures them and writes val_STEP.png; for the
// diffusion stage it also measures the denoiser's x̂0 at a few t (x0Quality).
func validate(ctx context.Context, net Net, rrdbOnly bool, sampler model.Sampler, vs *valSet, seed int64, step int, dir string) (*ValResult, error) {
	sr := NewSRNet(net, rrdbOnly, SROptions{Seed: seed, Sampler: sampler})
	var mean metrics.Mean
	rows := make([][]*dataset.RGB, 0, len(vs.hr))
	for i, lr := range vs.lr {
		out, err := sr.Upscale(ctx, lr)
		if err != nil {
			return nil, fmt.Errorf("worker: validation of %s: %w", vs.ids[i], err)
		}
		hr := vs.hr[i]
		p, s, err := metrics.RGB8(hr.W, hr.H, out.Pix, hr.Pix, vs.crop)
		if err != nil {
			return nil, err
		}
		mean.Add(p, s)
		rows = append(rows, []*dataset.RGB{vs.bic[i], out, hr})
	}
	if err := SaveGrid(filepath.Join(dir, fmt.Sprintf("val_%06d.png", step)), rows); err != nil {
		return nil, err
	}
	res := &ValResult{Step: step, Images: mean.N(), PSNRY: mean.PSNR(), SSIMY: mean.SSIM(), BicubicPSNRY: vs.bicP, BicubicSSIMY: vs.bicS}
	if !rrdbOnly {
		x0, err := x0Quality(net, vs, seed)
		if err != nil {
			return nil, err
		}
		res.X0 = x0
	}
	return res, nil
}
