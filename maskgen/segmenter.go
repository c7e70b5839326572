// Package maskgen turns images into segmentation label maps and label maps into the
// embedded mask E of SAM-DiffSR (structural position encoding, METHOD §2). It holds
// the segmenters (built-in graph segmentation, SAM through ONNX Runtime), the SPE
// encoding and label-map file I/O. It knows nothing of datasets or the cluster.
package maskgen

import (
	"context"
	"fmt"
	"image"
)

// LabelMap holds one region id per pixel, row-major; 0 means "in no region".
// Region ids are 1..Regions. Where a segmenter produces overlapping masks, the map
// holds the last one painted (METHOD §2: masks painted in descending predicted IoU,
// later ones overwrite).
type LabelMap struct {
	Width, Height int
	// Labels has Width*Height entries.
	Labels []uint16
	// Regions is the largest region id used.
	Regions int
}

// NewLabelMap allocates an all-zero label map.
func NewLabelMap(w, h int) *LabelMap {
	return &LabelMap{Width: w, Height: h, Labels: make([]uint16, w*h)}
}

// At returns the label of pixel (x, y).
func (m *LabelMap) At(x, y int) uint16 { return m.Labels[y*m.Width+x] }

// Validate checks the map's shape and ids.
func (m *LabelMap) Validate() error {
	if m.Width <= 0 || m.Height <= 0 || len(m.Labels) != m.Width*m.Height {
		return fmt.Errorf("maskgen: label map %dx%d has %d labels", m.Width, m.Height, len(m.Labels))
	}
	for _, l := range m.Labels {
		if int(l) > m.Regions {
			return fmt.Errorf("maskgen: label %d exceeds region count %d", l, m.Regions)
		}
	}
	return nil
}

// Segmenter segments an image into regions.
//
// Implementations must be deterministic (same image, same parameters → same labels)
// and safe for use by one goroutine at a time; callers that segment in parallel create
// one Segmenter per goroutine or use one documented as concurrency-safe.
type Segmenter interface {
	// Name identifies the segmenter ("builtin", "sam-onnx") in sidecar files.
	Name() string
	// Params returns the parameters that determine its output, for sidecar files.
	Params() map[string]any
	// Segment returns the label map of img, with img's bounds size.
	Segment(ctx context.Context, img image.Image) (*LabelMap, error)
}
