//go:build !cuda

package worker

import (
	"fmt"
	"log/slog"

	"github.com/samdiffsr/samdiffsr/configs"
)

// CUDABuild reports whether this binary was built with -tags cuda.
const CUDABuild = false

// NewNet builds the model of cfg (parameters initialised from seed) on the backend
// model.backend selects. This binary has no CUDA support: cpu and auto give the
// CPU model (auto logs why), cuda is an error.
func NewNet(cfg configs.Config, seed int64, log *slog.Logger) (Net, error) {
	if log == nil {
		log = slog.Default()
	}
	b, err := parseBackend(cfg.Model.Backend)
	if err != nil {
		return nil, err
	}
	switch b {
	case "cuda":
		return nil, fmt.Errorf("worker: model.backend is cuda but this binary was built without CUDA support; use bin/samdiffsr-cuda (make cuda) on a GPU machine, or set model.backend to auto or cpu")
	case "auto":
		log.Info("compute backend: cpu", "reason", "model.backend auto and this binary was built without CUDA support (make cuda builds bin/samdiffsr-cuda)")
	}
	m, err := newCPUModel(cfg, seed)
	if err != nil {
		return nil, err
	}
	return CPUNet(m), nil
}
