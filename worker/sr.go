package worker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/samdiffsr/samdiffsr/dataset"
)

// SROptions configure super-resolution with a trained checkpoint.
type SROptions struct {
	// Tile is the LR tile side (0: default).
	Tile int
	// Seed drives the sampler's noise.
	Seed int64
	// Log receives progress lines.
	Log *slog.Logger
}

// SR super-resolves images with a trained checkpoint.
type SR struct{}

// LoadSR loads a checkpoint for super-resolution.
func LoadSR(path string, opt SROptions) (*SR, error) {
	return nil, fmt.Errorf("worker: super-resolution from %s: the model package is not available yet", path)
}

// Upscale implements Upscaler.
func (s *SR) Upscale(ctx context.Context, lr *dataset.RGB) (*dataset.RGB, error) {
	return nil, fmt.Errorf("worker: not implemented")
}
