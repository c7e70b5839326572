package main

import (
	"testing"

	"github.com/samdiffsr/samdiffsr/checkpoints"
)

func TestDroppedMomentsCountsRRDBState(t *testing.T) {
	a := &checkpoints.TorchAdam{Moments: map[string]checkpoints.Tensor{
		"denoise_fn.x.exp_avg": {}, "denoise_fn.x.exp_avg_sq": {},
		"rrdb.conv_first.weight.exp_avg": {}, "rrdb.conv_first.weight.exp_avg_sq": {},
		"rrdb.conv_first.bias.exp_avg": {}, "rrdb.conv_first.bias.exp_avg_sq": {},
	}}
	kept := map[string]checkpoints.Tensor{"denoise_fn.x.exp_avg": {}, "denoise_fn.x.exp_avg_sq": {}}
	if n := droppedMoments(a, kept); n != 2 {
		t.Fatalf("dropped %d, want the 2 RRDB tensors", n)
	}
}
