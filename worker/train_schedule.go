package worker

import (
	"context"
	"fmt"
	"math"
)

// Collective sums a float32 vector across the ranks of a training generation, in
// place: after AllReduce every rank holds the element-wise sum. The training loop calls
// it once per step on the flattened gradients (then divides by the world size given
// in TrainOptions). Implementations: Single (one rank, a no-op), the TCP ring, later
// NCCL.
type Collective interface {
	// AllReduce sums buf across ranks in place. It returns an error (never hangs
	// past ctx) when a peer is lost.
	AllReduce(ctx context.Context, buf []float32) error
}

// Single is the one-rank Collective: AllReduce leaves the buffer as it is.
type Single struct{}

// AllReduce implements Collective.
func (Single) AllReduce(ctx context.Context, _ []float32) error { return ctx.Err() }

// LRSchedule gives the learning rate for the update applied at step (0-based), for a
// stage of total steps:
//
//   - "constant": base.
//   - "step" (reference): base·gamma^floor(step/every) — the reference's StepLR,
//     2e-4 halved at 200k.
//   - "cosine" (paper): base·(1 + cos(π·step/total))/2, from base at step 0 down to 0
//     at step total.
func LRSchedule(kind string, base float64, step, total, every int, gamma float64) (float64, error) {
	switch kind {
	case "constant", "":
		return base, nil
	case "step":
		if every <= 0 {
			return 0, fmt.Errorf("worker: lr_schedule step needs train.lr_step > 0, got %d", every)
		}
		return base * math.Pow(gamma, float64(step/every)), nil
	case "cosine":
		if total <= 0 {
			return 0, fmt.Errorf("worker: lr_schedule cosine needs a positive number of steps, got %d", total)
		}
		s := min(max(step, 0), total)
		return base * (1 + math.Cos(math.Pi*float64(s)/float64(total))) / 2, nil
	}
	return 0, fmt.Errorf("worker: unknown lr_schedule %q; use cosine, step or constant", kind)
}
