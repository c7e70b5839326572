package worker

import (
	"context"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

// NewFarmProcess returns the FarmProcess that runs the mask task with seg: exactly
// the per-image task `samdiffsr masks` runs locally, refusing images whose header
// claims more than maxPixels pixels (data.max_pixels; <= 0: the default limit).
func NewFarmProcess(seg maskgen.Segmenter, maxPixels int64) FarmProcess {
	return func(ctx context.Context, imageID, path string) (*FarmOutput, error) {
		r, err := ProcessMaskImageMax(ctx, seg, imageID, path, maxPixels)
		if err != nil {
			return nil, err
		}
		return &FarmOutput{ImageSHA256: r.SHA256, Regions: r.Regions, PNG: r.PNG, Sidecar: r.Sidecar}, nil
	}
}
