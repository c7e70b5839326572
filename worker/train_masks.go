package worker

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// EnsureBuiltinMasks writes a label map with the built-in segmenter for every image
// that has none in dir (images that already have one are left alone), one image per
// core at a time, through the same local farm as `samdiffsr masks`. It is the fallback
// `samdiffsr train` uses so that a first run needs no
// separate masks step; large datasets should use `samdiffsr masks` or the farm.
func EnsureBuiltinMasks(ctx context.Context, images []dataset.Image, dir string, cfg configs.Masks, log *slog.Logger) error {
	var missing []dataset.Image
	for _, im := range images {
		if !maskgen.LabelMapExists(dataset.MaskPath(dir, im.ID)) {
			missing = append(missing, im)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if cfg.Segmenter != "" && cfg.Segmenter != maskgen.BuiltinName {
		return fmt.Errorf("worker: %d images have no label map in %s and masks.segmenter is %q; run `samdiffsr masks` first", len(missing), dir, cfg.Segmenter)
	}
	if log == nil {
		log = slog.Default()
	}
	log.Info("making missing masks with the built-in segmenter", "images", len(missing), "dir", dir)
	workers := max(1, runtime.GOMAXPROCS(0))
	threads := max(1, runtime.GOMAXPROCS(0)/workers)
	if _, err := maskgen.NewBuiltinFromConfig(cfg.Builtin, threads); err != nil {
		return err
	}
	rep, err := RunLocalMaskFarm(ctx, LocalFarmOptions{
		Images:  MaskImagesFromLayout(&dataset.Layout{Images: missing}),
		Out:     dir,
		Workers: workers,
		NewSegmenter: func() (maskgen.Segmenter, error) {
			return maskgen.NewBuiltinFromConfig(cfg.Builtin, threads)
		},
		Log: log,
	})
	if err != nil {
		return err
	}
	if rep.Failed > 0 {
		f := rep.Failures[0]
		return fmt.Errorf("worker: %d of %d images could not be segmented (first: %s: %s; all in %s); fix or remove them",
			rep.Failed, rep.Total, f.Path, f.Error, filepath.Join(dir, FailuresFile))
	}
	return nil
}
