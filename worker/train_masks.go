package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// EnsureBuiltinMasks writes a label map with the built-in segmenter for every image
// that has none in dir (images that already have one are left alone), one image at a
// time. It is the fallback `samdiffsr train` uses so that a first run needs no
// separate masks step; large datasets should use `samdiffsr masks` or the farm.
func EnsureBuiltinMasks(ctx context.Context, images []dataset.Image, dir string, cfg configs.Masks, log *slog.Logger) error {
	var todo []dataset.Image
	for _, im := range images {
		if !maskgen.LabelMapExists(dataset.MaskPath(dir, im.ID)) {
			todo = append(todo, im)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	if cfg.Segmenter != "" && cfg.Segmenter != maskgen.BuiltinName {
		return fmt.Errorf("worker: %d images have no label map in %s and masks.segmenter is %q; run `samdiffsr masks` first", len(todo), dir, cfg.Segmenter)
	}
	if log == nil {
		log = slog.Default()
	}
	log.Info("making missing masks with the built-in segmenter", "images", len(todo), "dir", dir)
	seg, err := maskgen.NewBuiltinFromConfig(cfg.Builtin, 0)
	if err != nil {
		return err
	}
	for _, im := range todo {
		if err := ctx.Err(); err != nil {
			return err
		}
		src, err := os.ReadFile(im.HRPath)
		if err != nil {
			return fmt.Errorf("worker: read %s: %w", im.HRPath, err)
		}
		img, err := dataset.LoadRGB(im.HRPath)
		if err != nil {
			return err
		}
		lm, err := seg.Segment(ctx, img.Image())
		if err != nil {
			return fmt.Errorf("worker: segment %s: %w", im.HRPath, err)
		}
		sc := &maskgen.Sidecar{Format: maskgen.SidecarFormat, Segmenter: seg.Name(), Params: seg.Params(), Regions: lm.Regions,
			Width: lm.Width, Height: lm.Height, Source: im.ID, SourceSHA256: maskgen.SHA256Hex(src)}
		if err := maskgen.WriteLabelMap(dataset.MaskPath(dir, im.ID), lm, sc); err != nil {
			return err
		}
	}
	return nil
}
