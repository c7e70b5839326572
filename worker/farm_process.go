package worker

import (
	"context"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

// NewFarmProcess returns the FarmProcess that runs the mask task with seg: exactly
// ProcessMaskImage, the per-image task `samdiffsr masks` runs locally.
func NewFarmProcess(seg maskgen.Segmenter) FarmProcess {
	return func(ctx context.Context, imageID, path string) (*FarmOutput, error) {
		r, err := ProcessMaskImage(ctx, seg, imageID, path)
		if err != nil {
			return nil, err
		}
		return &FarmOutput{ImageSHA256: r.SHA256, Regions: r.Regions, PNG: r.PNG, Sidecar: r.Sidecar}, nil
	}
}
