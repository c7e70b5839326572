package worker

import (
	"fmt"
	"math"
)

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
