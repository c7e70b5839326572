package worker

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/samdiffsr/samdiffsr/collective"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/model"
)

// trainer is one rank's optimisation of one stage, in four parts that a driver
// calls in order for every step:
//
//	compute  this rank's share of the global batch → loss, and gradients in the
//	         trained network's contiguous gradient slab (model.SRDiff's
//	         UNetGrads/RRDBGrads: every Param.Grad is a window of it, so the
//	         collective reduces it in place, with no flatten/unflatten copy);
//	reduce   the Collective sums the slab across ranks;
//	agree    a small all-reduce of (ok, loss, loss totals by timestep band):
//	         every rank learns whether all ranks got a finite gradient and the
//	         whole reduced slab, and rank 0 the global batch's loss by band;
//	apply    Adam at the scheduled learning rate — the only place step moves.
//
// Gradient scaling, once: every rank's loss is the mean over its n samples of the
// global batch of B, and the loss of the step is the mean over all B, i.e. the sum
// over ranks of (n/B)·(its loss). compute therefore scales the rank's gradient by n/B
// (exactly 1 on a single rank, where it is skipped), and the sum the Collective forms
// is the gradient of the global mean. The same global batch thus gives the same
// update whatever the world size, up to float rounding in the sum.
type trainer struct {
	net    Net
	m      *model.SRDiff
	cfg    configs.Config
	stage  string
	rrdb   bool
	spec   stageSpec
	params []*model.Param
	grads  []float32
	T      int
	// step is the number of steps applied.
	step int
	// n and loss are the last compute's local sample count and loss; ok whether
	// its loss and gradients were finite (nonFinite names what was not).
	n         int
	loss      float32
	ok        bool
	nonFinite string
	// bands are the timestep bands of the diffusion loss (lossBands); localBands
	// holds this rank's band totals of the last compute, stepBands the global ones
	// after agree (empty for the RRDB stage).
	bands                 [][2]int
	localBands, stepBands bandTotals
}

// newTrainer prepares net to train stage from step (steps already applied).
func newTrainer(net Net, cfg configs.Config, stage string, step int) (*trainer, error) {
	spec, err := specFor(cfg, stage)
	if err != nil {
		return nil, err
	}
	m := net.Model()
	t := &trainer{net: net, m: m, cfg: cfg, stage: stage, rrdb: stage == StageRRDB, spec: spec, T: m.Schedule().T, step: step}
	if !t.rrdb {
		t.bands = lossBands(t.T)
	}
	t.localBands, t.stepBands = newBandTotals(len(t.bands)), newBandTotals(len(t.bands))
	if t.rrdb {
		t.params, t.grads = m.RRDBParams(), m.RRDBGrads()
	} else {
		t.params, t.grads = m.UNetParams(), m.UNetGrads()
	}
	return t, nil
}

// compute evaluates this rank's share of the global batch of step t.step: loss and
// scaled gradients into the slab (made visible on the host). A non-finite loss or
// gradient is not an error here: ok turns false, the slab is zeroed (so a sum with
// it stays finite) and agree tells every rank. A share with no sample this step (a
// rank computing the samples of its own shards) contributes zeros.
func (t *trainer) compute(ctx context.Context, loader *dataset.Loader, share dataset.Share) error {
	b, err := loader.ShareBatch(ctx, int64(t.step), share)
	if err != nil {
		return fmt.Errorf("worker: batch of step %d: %w", t.step, err)
	}
	defer loader.Recycle(b)
	t.localBands.reset()
	if b.N == 0 {
		clear(t.grads)
		t.n, t.loss, t.ok, t.nonFinite = 0, 0, true, ""
		return nil
	}
	mb := &model.Batch{N: b.N, H: b.H, W: b.W, HR: b.HR, Up: b.Up, LR: b.LR, E: b.E}
	var loss float32
	if t.rrdb {
		loss, err = t.net.Loss(true, mb, nil, nil)
	} else {
		ts, noise := stepNoise(t.cfg.Seed, t.step, t.spec.batch, b.Index, 3*b.H*b.W, t.T)
		loss, err = t.net.Loss(false, mb, ts, noise)
		if err == nil {
			t.addBands(ts)
		}
	}
	t.n, t.loss, t.ok, t.nonFinite = b.N, loss, true, ""
	if !finite(loss) { // the model reports it as an error too; it is a vote here
		t.ok, t.nonFinite, err = false, fmt.Sprintf("the loss (%v)", loss), nil
	}
	if err != nil {
		return fmt.Errorf("worker: step %d: %w", t.step, err)
	}
	if err := t.net.PullGrads(t.rrdb); err != nil {
		return fmt.Errorf("worker: step %d: %w", t.step, err)
	}
	if t.ok {
		if name, ok := finiteGrads(t.params); !ok {
			t.ok, t.nonFinite = false, fmt.Sprintf("the gradient of %s (loss %v)", name, loss)
		}
	}
	switch {
	case !t.ok:
		clear(t.grads)
		t.localBands.reset()
	case b.N != t.spec.batch:
		scale := float32(b.N) / float32(t.spec.batch)
		for i := range t.grads {
			t.grads[i] *= scale
		}
	}
	return nil
}

// reduce sums the gradient slab across the ranks of coll (world > 1) and sends the
// sum back to a device Net.
func (t *trainer) reduce(ctx context.Context, coll collective.Collective, world int) error {
	if world <= 1 {
		return nil
	}
	if err := coll.AllReduce(ctx, t.grads); err != nil {
		return fmt.Errorf("worker: all-reduce of step %d: %w", t.step, err)
	}
	return t.net.PushGrads(t.rrdb)
}

// addBands adds the per-sample losses of the last diffusion Loss (steps ts) to
// localBands.
func (t *trainer) addBands(ts []int) {
	per := t.net.SampleLosses()
	if len(per) != len(ts) {
		return
	}
	for i, v := range per {
		k := bandOf(t.bands, ts[i])
		t.localBands.Sum[k] += float64(v)
		t.localBands.N[k]++
	}
}

// agree is the commit vote after reduce: it sums (ok, n/B·loss, the band totals)
// across ranks and reports whether every rank's step was good, and the loss of
// the global batch (its band totals go to stepBands, summed the same way). A
// rank that returns from agree with an error applies nothing; one that returns
// all-ok applies. (A rank lost between the two can leave survivors one step apart;
// the next generation starts from the most advanced and brings the others to it.)
func (t *trainer) agree(ctx context.Context, coll collective.Collective, world int) (bool, float32, error) {
	k := len(t.bands)
	if world <= 1 {
		copy(t.stepBands.Sum, t.localBands.Sum)
		copy(t.stepBands.N, t.localBands.N)
		return t.ok, t.loss, nil
	}
	vote := make([]float32, 2+2*k)
	vote[1] = float32(float64(t.loss) * float64(t.n) / float64(t.spec.batch))
	for i := range k {
		vote[2+i], vote[2+k+i] = float32(t.localBands.Sum[i]), float32(t.localBands.N[i])
	}
	if t.ok {
		vote[0] = 1
	} else {
		vote[1] = 0
	}
	if err := coll.AllReduce(ctx, vote); err != nil {
		return false, 0, fmt.Errorf("worker: commit vote of step %d: %w", t.step, err)
	}
	for i := range k {
		t.stepBands.Sum[i], t.stepBands.N[i] = float64(vote[2+i]), float64(vote[2+k+i])
	}
	return vote[0] == float32(world), vote[1], nil
}

// apply takes one Adam step at the scheduled rate and moves the step counter.
func (t *trainer) apply() (float64, error) {
	lr, err := LRSchedule(t.cfg.Train.LRSchedule, t.spec.lr, t.step, t.spec.steps, t.cfg.Train.LRStep, t.cfg.Train.LRGamma)
	if err != nil {
		return 0, err
	}
	if err := t.net.AdamStep(t.rrdb, lr); err != nil {
		return 0, err
	}
	t.step++
	return lr, nil
}

// nonFiniteError is the error of a step whose vote failed because a loss or
// gradient was not finite (here or on another rank).
func (t *trainer) nonFiniteError(last string) error {
	what := "a loss or gradient on another rank"
	if !t.ok {
		what = t.nonFinite
	}
	return fmt.Errorf("worker: step %d of the %s stage: %s is not finite: %w; nothing of this step was applied or saved (last checkpoint: %s); lower train.lr or check the data",
		t.step, t.stage, what, ErrNonFinite, orNone(last))
}

func finite(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }

// finiteGrads reports the first parameter whose gradient holds a NaN or infinity.
func finiteGrads(ps []*model.Param) (string, bool) {
	for _, p := range ps {
		for _, g := range p.Grad {
			if !finite(g) {
				return p.Name, false
			}
		}
	}
	return "", true
}

// stepNoise draws the timesteps and the standard normal noise of the local samples
// at positions idx of step s's global batch of size batch. Sample k's values come
// from a PCG keyed by (seed, s·batch + k) on a stream of their own, so they do not
// depend on how the batch is split across ranks.
func stepNoise(seed int64, s, batch int, idx []int, size, T int) ([]int, []float32) {
	n := len(idx)
	ts := make([]int, n)
	noise := make([]float32, n*size)
	for i, j := range idx {
		k := uint64(s)*uint64(batch) + uint64(j)
		rng := rand.New(rand.NewPCG(uint64(seed)^0x5eed_d1ff_0000_0001, k))
		ts[i] = rng.IntN(T)
		for j := 0; j < size; j++ {
			noise[i*size+j] = float32(rng.NormFloat64())
		}
	}
	return ts, noise
}
