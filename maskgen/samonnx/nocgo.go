//go:build !cgo

package samonnx

import (
	"context"
	"errors"
	"image"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// errNoCgo is returned by New in builds without cgo.
var errNoCgo = errors.New("samonnx: this samdiffsr was built without cgo, which sam-onnx needs to load ONNX Runtime; rebuild with CGO_ENABLED=1 and a C compiler (gcc)")

// Segmenter is unavailable without cgo; New always fails.
type Segmenter struct{}

// Option adjusts a Segmenter beyond the config.
type Option func(*Segmenter)

// WithThreads is accepted and ignored without cgo.
func WithThreads(int) Option { return func(*Segmenter) {} }

// New fails: sam-onnx needs cgo.
func New(cfg configs.SAM, opts ...Option) (*Segmenter, error) {
	if _, err := paramsFromConfig(cfg); err != nil {
		return nil, err
	}
	return nil, errNoCgo
}

// Name returns "sam-onnx".
func (s *Segmenter) Name() string { return Name }

// Params returns nil.
func (s *Segmenter) Params() map[string]any { return nil }

// Segment fails: sam-onnx needs cgo.
func (s *Segmenter) Segment(context.Context, image.Image) (*maskgen.LabelMap, error) {
	return nil, errNoCgo
}

// Close does nothing.
func (s *Segmenter) Close() error { return nil }
