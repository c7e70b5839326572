//go:build cgo

package emu

import (
	"testing"

	"github.com/samdiffsr/samdiffsr/model/cuda/kerneltest"
)

// TestKernels checks every kernel of kernels.cu, compiled for the host, against
// model.CPU (rel 1e-5), with two launch shapes.
func TestKernels(t *testing.T) {
	for _, k := range []Kernels{{Grid: 3, Block: 37, NP: 7}, {Grid: 1, Block: 1, NP: 1}} {
		kerneltest.Run(t, k, 1e-5)
	}
}
