package maskgen

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
)

// SAMJSONName is the Sidecar.Segmenter of label maps imported from SAM's JSON files.
const SAMJSONName = "sam-json"

// SAMAnnotation is one mask of the JSON file SAM's scripts/amg.py writes per image
// with --convert-to-rle (a list of these). Only the fields painting needs are read;
// area, bbox, point_coords and crop_box are ignored.
type SAMAnnotation struct {
	// Segmentation is the mask.
	Segmentation RLE `json:"segmentation"`
	// PredictedIoU is SAM's predicted mask quality; masks are painted in descending order of it.
	PredictedIoU float64 `json:"predicted_iou"`
	// StabilityScore is SAM's stability score (kept for reference).
	StabilityScore float64 `json:"stability_score"`
}

// ParseSAMJSON reads an amg.py JSON file: a list of annotations whose segmentation is
// COCO RLE (compressed-string or uncompressed counts). Every mask must have the same
// size and a finite predicted_iou; errors name the annotation.
func ParseSAMJSON(data []byte) ([]SAMAnnotation, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("maskgen: SAM JSON: want a list of annotations (amg.py --convert-to-rle output): %w", err)
	}
	anns := make([]SAMAnnotation, len(raw))
	for i, r := range raw {
		var probe struct {
			Segmentation json.RawMessage `json:"segmentation"`
			PredictedIoU *float64        `json:"predicted_iou"`
		}
		if err := json.Unmarshal(r, &probe); err != nil {
			return nil, fmt.Errorf("maskgen: SAM JSON annotation %d: %w", i, err)
		}
		if len(probe.Segmentation) == 0 {
			return nil, fmt.Errorf("maskgen: SAM JSON annotation %d has no segmentation (run amg.py with --convert-to-rle)", i)
		}
		if probe.PredictedIoU == nil {
			return nil, fmt.Errorf("maskgen: SAM JSON annotation %d has no predicted_iou", i)
		}
		if err := json.Unmarshal(r, &anns[i]); err != nil {
			return nil, fmt.Errorf("maskgen: SAM JSON annotation %d: %w", i, err)
		}
		a := &anns[i]
		if math.IsNaN(a.PredictedIoU) || math.IsInf(a.PredictedIoU, 0) {
			return nil, fmt.Errorf("maskgen: SAM JSON annotation %d: predicted_iou %v is not a number", i, a.PredictedIoU)
		}
		s, f := a.Segmentation, anns[0].Segmentation
		if s.Height != f.Height || s.Width != f.Width {
			return nil, fmt.Errorf("maskgen: SAM JSON annotation %d is %dx%d (WxH), annotation 0 is %dx%d; all masks of an image have its size",
				i, s.Width, s.Height, f.Width, f.Height)
		}
	}
	return anns, nil
}

// PaintSAMAnnotations paints the masks into a w×h label map as the built-in SAM
// generator (maskgen/samonnx) paints its masks: in descending predicted IoU (ties
// keep file order, the order amg.py writes them), mask i of that order getting label
// i+1, later masks overwriting earlier ones, 0 where no mask is. Regions is the number
// of masks. Every mask must be w×h.
func PaintSAMAnnotations(anns []SAMAnnotation, w, h int) (*LabelMap, error) {
	if len(anns) > math.MaxUint16 {
		return nil, fmt.Errorf("maskgen: %d masks; a label map holds at most %d", len(anns), math.MaxUint16)
	}
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("maskgen: label map size %dx%d must be positive", w, h)
	}
	for i := range anns {
		s := &anns[i].Segmentation
		if s.Width != w || s.Height != h {
			return nil, fmt.Errorf("maskgen: SAM mask %d is %dx%d (WxH) but the image is %dx%d; the JSON was made from another (or a resized) image",
				i, s.Width, s.Height, w, h)
		}
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("maskgen: SAM mask %d: %w", i, err)
		}
	}
	order := make([]int, len(anns))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return anns[order[a]].PredictedIoU > anns[order[b]].PredictedIoU })
	lm := NewLabelMap(w, h)
	lm.Regions = len(anns)
	for k, i := range order {
		label := uint16(k + 1)
		anns[i].Segmentation.forEachSet(func(p int) { lm.Labels[p] = label })
	}
	return lm, nil
}
