package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore"
)

// FarmOutput is what one mask task produces for the distributed farm: the label map
// PNG and its sidecar, and the SHA-256 of the image that was read.
type FarmOutput struct {
	// ImageSHA256 is the hex SHA-256 of the image file's bytes as read.
	ImageSHA256 string
	// Regions is the number of regions.
	Regions int
	// PNG is the 16-bit label-map PNG; Sidecar its JSON sidecar.
	PNG, Sidecar []byte
}

// FarmProcess segments one image (id, path) for the farm. One FarmProcess is used by
// one goroutine at a time.
type FarmProcess func(ctx context.Context, imageID, path string) (*FarmOutput, error)

// FarmOptions configure a distributed mask worker.
type FarmOptions struct {
	// Conn is the NATS connection (credentials already applied).
	Conn *nats.Conn
	// Job names the job (stream, consumer, bucket and subjects derive from it).
	Job string
	// ID names this worker in the coordinator's registry.
	ID string
	// Roles are announced in heartbeats ("mask").
	Roles []string
	// NewProcess makes the FarmProcess of one slot.
	NewProcess func() (FarmProcess, error)
	// Slots is how many tasks this worker runs at once (default 1).
	Slots int
	// AckWait is the consumer's ack wait; progress acks are sent every AckWait/3.
	AckWait time.Duration
	// Heartbeat is the liveness interval.
	Heartbeat time.Duration
	// RetryDelay delays the redelivery of a failed attempt (default 200ms).
	RetryDelay time.Duration
	// Log receives the worker's log lines.
	Log *slog.Logger
	// Metrics, when set, receives the worker's Prometheus series.
	Metrics prometheus.Registerer
	// OnTask, when set, is called after each task with its outcome ("done", "duplicate",
	// "skip", "retry", "failed").
	OnTask func(taskID, outcome string)
}

type farmMetrics struct {
	tasks   *prometheus.CounterVec
	seconds prometheus.Histogram
}

// RunMaskFarm serves mask tasks from the job's work queue until ctx ends: lease from
// the coordinator, segment, put the label map in the Object Store under the image's
// SHA-256, report, then ack. A task the ledger already holds as final is acked
// unprocessed; a failed attempt is retried until the consumer's MaxDeliver, when the
// failure is reported final.
func RunMaskFarm(ctx context.Context, o FarmOptions) error {
	if o.Conn == nil || o.Job == "" || o.ID == "" || o.NewProcess == nil {
		return errors.New("worker: mask farm needs a NATS connection, job, worker id and a segmenter")
	}
	o.Slots = max(o.Slots, 1)
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 2 * time.Second
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 200 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(o.Roles) == 0 {
		o.Roles = []string{"mask"}
	}
	log := o.Log.With("worker", o.ID)
	names := natsutil.NamesFor(o.Job)
	js, err := jetstream.New(o.Conn)
	if err != nil {
		return fmt.Errorf("worker: jetstream: %w", err)
	}
	m := &farmMetrics{
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "samdiffsr_worker_mask_tasks_total", Help: "Mask tasks handled by outcome."}, []string{"outcome"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "samdiffsr_worker_mask_task_seconds", Help: "Time to segment, upload and report one image.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12)}),
	}
	if o.Metrics != nil {
		if err := o.Metrics.Register(m.tasks); err != nil {
			return fmt.Errorf("worker: metrics: %w", err)
		}
		if err := o.Metrics.Register(m.seconds); err != nil {
			return fmt.Errorf("worker: metrics: %w", err)
		}
	}

	go heartbeat(ctx, o, names)

	// Wait for the leader to create the stream, consumer and bucket.
	var cons jetstream.Consumer
	var store *objstore.Store
	for {
		cons, err = js.Consumer(ctx, names.TaskStream(), names.MaskConsumer())
		if err == nil {
			store, err = objstore.Open(ctx, js, names.MaskBucket(), objstore.Options{Attempts: 1})
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Debug("waiting for the coordinator to create the task queue", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("worker: consumer info: %w", err)
	}
	maxDeliver := info.Config.MaxDeliver
	log.Info("serving mask tasks", "slots", o.Slots, "max_deliver", maxDeliver)

	var wg sync.WaitGroup
	errs := make(chan error, o.Slots)
	for range o.Slots {
		proc, err := o.NewProcess()
		if err != nil {
			return fmt.Errorf("worker: segmenter: %w", err)
		}
		s := &slot{o: o, log: log, names: names, store: store, proc: proc, maxDeliver: maxDeliver, m: m}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.serve(ctx, cons); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func heartbeat(ctx context.Context, o FarmOptions, names natsutil.Names) {
	host, _ := os.Hostname()
	data, _ := json.Marshal(natsutil.HeartbeatMessage{Worker: o.ID, Roles: o.Roles, Host: host})
	t := time.NewTicker(o.Heartbeat)
	defer t.Stop()
	for {
		o.Conn.Publish(names.Coord("heartbeat"), data)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type slot struct {
	o          FarmOptions
	log        *slog.Logger
	names      natsutil.Names
	store      *objstore.Store
	proc       FarmProcess
	maxDeliver int
	m          *farmMetrics
}

func (s *slot) serve(ctx context.Context, cons jetstream.Consumer) error {
	for ctx.Err() == nil {
		// The pull request ends with ctx, so a stopping worker does not wait it out.
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			s.log.Debug("fetch", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		for msg := range batch.Messages() {
			s.handle(ctx, msg)
		}
		cancel()
	}
	return nil
}

func (s *slot) outcome(id, o string) {
	s.m.tasks.WithLabelValues(o).Inc()
	if s.o.OnTask != nil {
		s.o.OnTask(id, o)
	}
}

// handle runs one delivery of a task. It acks only after the coordinator has
// committed the outcome, so a crash at any point leads to a redelivery that the
// ledger recognises.
func (s *slot) handle(ctx context.Context, msg jetstream.Msg) {
	start := time.Now()
	meta, err := msg.Metadata()
	if err != nil {
		s.log.Error("task message without metadata; dropping it", "err", err)
		msg.Term()
		return
	}
	attempt := int(meta.NumDelivered)
	var tm natsutil.TaskMessage
	if err := json.Unmarshal(msg.Data(), &tm); err != nil || tm.ID == "" {
		s.log.Error("malformed task message; dropping it", "seq", meta.Sequence.Stream, "err", err)
		msg.Term()
		return
	}
	log := s.log.With("task", tm.ID, "attempt", attempt)

	// Keep the delivery alive while we work (large images, leader elections).
	tctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		t := time.NewTicker(max(s.o.AckWait/3, 50*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-tctx.Done():
				return
			case <-t.C:
				msg.InProgress()
			}
		}
	}()

	rep, err := natsutil.RequestLeader(tctx, s.o.Conn, s.names.Coord("lease"), natsutil.LeaseRequest{TaskID: tm.ID, Worker: s.o.ID, Attempt: attempt}, 5*time.Second)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("lease refused; dropping the message", "err", err)
			msg.Term()
		} else {
			msg.Nak()
		}
		return
	}
	if rep.Outcome == "skip" {
		log.Debug("task already final in the ledger; acking unprocessed", "state", rep.State)
		msg.Ack()
		s.outcome(tm.ID, "skip")
		return
	}

	leased := time.Now()
	out, perr := s.proc(tctx, tm.ID, tm.Path)
	processed := time.Now()
	if perr == nil && tm.SHA256 != "" && out.ImageSHA256 != "" && out.ImageSHA256 != tm.SHA256 {
		perr = fmt.Errorf("image %s changed since it was submitted (sha256 %.12s, manifest %.12s); resubmit the dataset", tm.Path, out.ImageSHA256, tm.SHA256)
	}
	if perr != nil {
		if ctx.Err() != nil {
			msg.Nak()
			return
		}
		final := s.maxDeliver > 0 && attempt >= s.maxDeliver
		log.Warn("mask task failed", "final", final, "err", perr)
		r := natsutil.ReportRequest{TaskID: tm.ID, Worker: s.o.ID, Attempt: attempt, Reason: perr.Error(), Final: final}
		if _, err := natsutil.RequestLeader(tctx, s.o.Conn, s.names.Coord("report"), r, 5*time.Second); err != nil {
			msg.Nak()
			return
		}
		if final {
			msg.Term()
			s.outcome(tm.ID, "failed")
		} else {
			msg.NakWithDelay(s.o.RetryDelay)
			s.outcome(tm.ID, "retry")
		}
		return
	}

	key := tm.SHA256
	if key == "" {
		key = out.ImageSHA256
	}
	if _, err := s.store.PutBytes(tctx, key, out.PNG, map[string]string{"sidecar": string(out.Sidecar), "image": tm.ID}); err != nil {
		log.Warn("upload label map (will be redelivered)", "err", err)
		msg.NakWithDelay(s.o.RetryDelay)
		return
	}
	uploaded := time.Now()
	sum := sha256.Sum256(out.PNG)
	r := natsutil.ReportRequest{TaskID: tm.ID, Worker: s.o.ID, Attempt: attempt, OK: true, ImageSHA256: out.ImageSHA256,
		Key: key, Digest: hex.EncodeToString(sum[:]), Regions: out.Regions}
	rep, err = natsutil.RequestLeader(tctx, s.o.Conn, s.names.Coord("report"), r, 5*time.Second)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("report refused", "err", err)
			msg.Term()
		} else {
			msg.Nak()
		}
		return
	}
	msg.Ack()
	s.m.seconds.Observe(time.Since(start).Seconds())
	log.Debug("task done", "lease", leased.Sub(start), "segment", processed.Sub(leased), "upload", uploaded.Sub(processed),
		"commit", time.Since(uploaded), "outcome", rep.Outcome)
	if rep.Outcome == "duplicate" {
		s.outcome(tm.ID, "duplicate")
		return
	}
	s.outcome(tm.ID, "done")
}
