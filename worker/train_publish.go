package worker

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// PublishFunc uploads one checkpoint folder and commits it to the registry
// (checkpoints.Publish bound to a connection and job).
type PublishFunc func(ctx context.Context, dir string) error

// publisher uploads the writer rank's checkpoints in the background, in the order
// they were written, so a training step never waits for the network: the recorder
// writes the folder to disk as always and hands its path over. A failed upload is
// retried with backoff (publishAttempts in all), then reported and dropped;
// training goes on either way.
type publisher struct {
	publish PublishFunc
	// keep is train.keep_checkpoints: the publisher prunes the stage folder after
	// each upload (instead of the recorder), so no folder is removed mid-upload.
	keep int
	// backoff is the first pause between tries (publishBackoff).
	backoff time.Duration
	log     *slog.Logger
	met     *publishMetrics

	mu      sync.Mutex
	queue   []string
	wake    chan struct{}
	idle    *sync.Cond
	busy    bool
	stopped bool
	done    chan struct{}
	cancel  context.CancelFunc
}

// publishAttempts bounds the tries of one checkpoint; publishBackoff is the first
// pause between them (doubling).
const (
	publishAttempts = 5
	publishBackoff  = 500 * time.Millisecond
)

func newPublisher(publish PublishFunc, keep int, log *slog.Logger, reg prometheus.Registerer) *publisher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &publisher{publish: publish, keep: keep, backoff: publishBackoff, log: log, met: newPublishMetrics(reg), wake: make(chan struct{}, 1), done: make(chan struct{}), cancel: cancel}
	p.idle = sync.NewCond(&p.mu)
	go p.run(ctx)
	return p
}

// enqueue hands a written checkpoint folder over; it returns at once.
func (p *publisher) enqueue(dir string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.queue = append(p.queue, dir)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// flush waits until every enqueued checkpoint was published or given up on, or
// ctx ends.
func (p *publisher) flush(ctx context.Context) {
	if p == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		p.mu.Lock()
		for (len(p.queue) > 0 || p.busy) && !p.stopped {
			p.idle.Wait()
		}
		p.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		p.log.Warn("checkpoint uploads still pending", "err", ctx.Err())
	}
}

// close stops the uploads (pending ones are dropped: their folders stay on disk).
func (p *publisher) close() {
	if p == nil {
		return
	}
	p.cancel()
	<-p.done
}

func (p *publisher) run(ctx context.Context) {
	defer close(p.done)
	defer func() {
		p.mu.Lock()
		p.stopped = true
		p.idle.Broadcast()
		p.mu.Unlock()
	}()
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.busy = false
			p.idle.Broadcast()
			p.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
			}
			continue
		}
		dir := p.queue[0]
		p.queue = p.queue[1:]
		p.busy = true
		p.mu.Unlock()
		p.one(ctx, dir)
		// dir is STAGE/checkpoints/step_N: prune STAGE's folders as the recorder would.
		if err := checkpoints.Prune(filepath.Dir(filepath.Dir(dir)), p.keep); err != nil {
			p.log.Warn("prune checkpoints", "err", err)
		}
	}
}

// one publishes dir, retrying.
func (p *publisher) one(ctx context.Context, dir string) {
	wait := p.backoff
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		err := p.publish(ctx, dir)
		if err == nil {
			p.met.ok(time.Since(t0))
			p.log.Info("checkpoint published", "dir", dir, "seconds", time.Since(t0).Seconds())
			return
		}
		if ctx.Err() != nil {
			return
		}
		p.met.failed()
		if attempt >= publishAttempts {
			p.log.Error("checkpoint not published; it stays on disk", "dir", dir, "attempts", attempt, "err", err)
			return
		}
		p.log.Warn("checkpoint upload failed; retrying", "dir", dir, "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// publishMetrics are the writer rank's upload series.
type publishMetrics struct {
	uploads, failures prometheus.Counter
	seconds           prometheus.Histogram
}

func newPublishMetrics(reg prometheus.Registerer) *publishMetrics {
	if reg == nil {
		return nil
	}
	m := &publishMetrics{
		uploads:  prometheus.NewCounter(prometheus.CounterOpts{Name: "samdiffsr_checkpoint_publishes_total", Help: "Checkpoints uploaded and committed to the registry."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "samdiffsr_checkpoint_publish_failures_total", Help: "Failed checkpoint upload attempts."}),
		seconds:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "samdiffsr_checkpoint_publish_seconds", Help: "Time to upload and commit one checkpoint.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
	}
	for _, c := range []prometheus.Collector{m.uploads, m.failures, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil
		}
	}
	return m
}

func (m *publishMetrics) ok(d time.Duration) {
	if m != nil {
		m.uploads.Inc()
		m.seconds.Observe(d.Seconds())
	}
}

func (m *publishMetrics) failed() {
	if m != nil {
		m.failures.Inc()
	}
}

// RegistryPublish is the PublishFunc of a writer rank: it uploads each checkpoint
// folder to job's registry over nc (checkpoints.Registry.Publish) with the
// retention policy of t (train.keep_checkpoints, keep_every, keep_best).
func RegistryPublish(nc *nats.Conn, job, workerID string, t configs.Train) (PublishFunc, error) {
	reg, err := checkpoints.NewRegistry(nc, job)
	if err != nil {
		return nil, err
	}
	pol := natsutil.CheckpointRetention{KeepLast: t.KeepCheckpoints, KeepEvery: t.KeepEvery, KeepBest: t.KeepBest}
	return func(ctx context.Context, dir string) error {
		_, err := reg.Publish(ctx, dir, pol, workerID)
		return err
	}, nil
}
