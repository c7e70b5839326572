package worker

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/samdiffsr/samdiffsr/collective"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// progressReporter aggregates a rank's per-step timings and publishes them once a
// second from its own goroutine for the whole generation — also while the rank
// meets its peers, receives state or runs a long step — so the leader never takes a
// busy rank for a silent one, and the control plane sees one message a second, not
// one per step.
type progressReporter struct {
	mu               sync.Mutex
	worker           string
	gen, rank, stage int
	step, steps      int
	compute, wait    time.Duration
	apply            time.Duration
	loss             float64
	last, first      time.Time
	bytes0           int64
	stats            func() collective.Stats
	data             func() *natsutil.DataPlacement
}

// reportEvery is how often a rank reports progress.
const reportEvery = time.Second

// startProgress starts reporting for one generation; stop ends it with a last report.
func startProgress(ctl *trainControl, worker string, gen, rank, stage, step int) (rep *progressReporter, stop func()) {
	rep = &progressReporter{worker: worker, gen: gen, rank: rank, stage: stage, step: step, last: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ctl.progress(rep.report())
	go func() {
		defer close(done)
		t := time.NewTicker(reportEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				ctl.progress(rep.report())
			}
		}
	}()
	return rep, func() {
		cancel()
		<-done
		ctl.progress(rep.report())
	}
}

// setStats names where the collective's byte counts come from (once the ring exists).
func (p *progressReporter) setStats(f func() collective.Stats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats = f
	if f != nil {
		p.bytes0 = f().BytesSent
	}
}

// setData names where the rank's packed-dataset placement comes from (nil: none).
func (p *progressReporter) setData(f func() *natsutil.DataPlacement) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.data = f
}

// add records one applied step; it reports whether it was the generation's first.
func (p *progressReporter) add(step int, compute, wait, apply time.Duration, loss float64, at time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	first := p.first.IsZero()
	if first {
		p.first = at
	}
	p.step = step
	p.steps++
	p.compute += compute
	p.wait += wait
	p.apply += apply
	p.loss += loss
	return first
}

// report returns the message for the steps since the last one and starts a new window.
func (p *progressReporter) report() natsutil.TrainProgress {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	m := natsutil.TrainProgress{Worker: p.worker, Generation: p.gen, Rank: p.rank, Stage: p.stage, Step: int64(p.step),
		Steps: p.steps, FirstStepAt: p.first, Time: now.UTC()}
	if p.data != nil {
		m.Data = p.data()
	}
	var sent int64
	if p.stats != nil {
		sent = p.stats().BytesSent
	}
	if p.steps > 0 {
		n := float64(p.steps)
		m.ComputeS, m.WaitS, m.ApplyS, m.Loss = p.compute.Seconds()/n, p.wait.Seconds()/n, p.apply.Seconds()/n, p.loss/n
		m.Bytes = (sent - p.bytes0) / int64(p.steps)
		if el := now.Sub(p.last).Seconds(); el > 0 {
			m.StepsPerS = n / el
		}
	}
	p.steps, p.compute, p.wait, p.apply, p.loss, p.last, p.bytes0 = 0, 0, 0, 0, 0, now, sent
	return m
}

// rankMetrics are a rank's Prometheus series (nil registerer: none).
type rankMetrics struct {
	gen, rank, steps prometheus.Gauge
	compute, wait    prometheus.Histogram
}

func newRankMetrics(reg prometheus.Registerer) *rankMetrics {
	if reg == nil {
		return nil
	}
	buckets := prometheus.ExponentialBuckets(0.001, 2, 16)
	m := &rankMetrics{
		gen:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "samdiffsr_train_generation", Help: "Training generation this rank runs in."}),
		rank:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "samdiffsr_train_rank", Help: "This worker's rank in its generation."}),
		steps:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "samdiffsr_train_step", Help: "Steps applied in the current stage."}),
		compute: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "samdiffsr_train_compute_seconds", Help: "Time per step computing this rank's gradient.", Buckets: buckets}),
		wait:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "samdiffsr_train_collective_seconds", Help: "Time per step in the all-reduce and the commit vote.", Buckets: buckets}),
	}
	for _, c := range []prometheus.Collector{m.gen, m.rank, m.steps, m.compute, m.wait} {
		if err := reg.Register(c); err != nil {
			return nil
		}
	}
	return m
}

func (m *rankMetrics) generation(gen, rank int) {
	if m == nil {
		return
	}
	m.gen.Set(float64(gen))
	m.rank.Set(float64(rank))
}

func (m *rankMetrics) step(step int, compute, wait time.Duration) {
	if m == nil {
		return
	}
	m.steps.Set(float64(step))
	m.compute.Observe(compute.Seconds())
	m.wait.Observe(wait.Seconds())
}
