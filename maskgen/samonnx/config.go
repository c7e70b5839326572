package samonnx

import (
	"fmt"

	"github.com/samdiffsr/samdiffsr/configs"
)

// Name is the segmenter's name in configs (masks.segmenter) and sidecar files.
const Name = "sam-onnx"

// paramsFromConfig checks the generator parameters of masks.sam and converts them
// to the float32 thresholds SAM compares its float32 tensors against.
func paramsFromConfig(c configs.SAM) (genParams, error) {
	switch {
	case c.PointsPerSide <= 0:
		return genParams{}, fmt.Errorf("samonnx: masks.sam.points_per_side is %d; SAM's default is 32", c.PointsPerSide)
	case c.PointsPerBatch <= 0:
		return genParams{}, fmt.Errorf("samonnx: masks.sam.points_per_batch is %d; SAM's default is 64", c.PointsPerBatch)
	case c.MinMaskRegionArea > 0:
		return genParams{}, fmt.Errorf("samonnx: masks.sam.min_mask_region_area is %d, but sam-onnx does not remove small regions; set it to 0 (SAM's default, the paper's setting)", c.MinMaskRegionArea)
	case c.StabilityScoreOffset < 0:
		return genParams{}, fmt.Errorf("samonnx: masks.sam.stability_score_offset is %g; it must be >= 0 (SAM's default is 1.0)", c.StabilityScoreOffset)
	}
	return genParams{
		maskThreshold:   float32(c.MaskThreshold),
		predIoU:         float32(c.PredIoUThresh),
		predIoUOn:       c.PredIoUThresh > 0,
		stability:       float32(c.StabilityScoreThresh),
		stabilityOn:     c.StabilityScoreThresh > 0,
		stabilityOffset: float32(c.StabilityScoreOffset),
		nms:             c.BoxNMSThresh,
	}, nil
}
