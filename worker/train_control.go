package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// trainControl is a training rank's side of the control plane (natsutil's
// train_wire.go describes the flow): readiness reports to the leader, the current
// generation and the rendezvous in the job's training KV bucket, progress reports.
// It carries control only; gradients and state go over the collective.
type trainControl struct {
	nc        *nats.Conn
	names     natsutil.Names
	kv        jetstream.KeyValue
	heartbeat time.Duration
	log       *slog.Logger
}

// pollEvery is how often a waiting rank reads the generation and rendezvous keys.
const pollEvery = 25 * time.Millisecond

// openTrainControl finds the job's training bucket (the leader creates it; a worker
// that starts first waits for it until ctx ends).
func openTrainControl(ctx context.Context, nc *nats.Conn, job string, heartbeat time.Duration, log *slog.Logger) (*trainControl, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("worker: jetstream: %w", err)
	}
	names := natsutil.NamesFor(job)
	warned := false
	for {
		kv, err := js.KeyValue(ctx, names.TrainBucket())
		if err == nil {
			return &trainControl{nc: nc, names: names, kv: kv, heartbeat: heartbeat, log: log}, nil
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) && ctx.Err() == nil {
			log.Debug("training bucket", "err", err)
		}
		if !warned {
			log.Info("waiting for the coordinator's training bucket", "bucket", names.TrainBucket())
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("worker: no coordinator made the training bucket %s: %w", names.TrainBucket(), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ready tells the leader this worker waits for a generation.
func (c *trainControl) ready(ctx context.Context, m natsutil.TrainReady) error {
	rctx, cancel := context.WithTimeout(ctx, 2*c.heartbeat)
	defer cancel()
	_, err := natsutil.RequestLeader(rctx, c.nc, c.names.Coord("train.ready"), m, c.heartbeat)
	return err
}

// generation reads the current generation (nil when none was committed yet).
func (c *trainControl) generation(ctx context.Context) (*natsutil.GenerationInfo, error) {
	e, err := c.kv.Get(ctx, natsutil.TrainGenerationKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var g natsutil.GenerationInfo
	if err := json.Unmarshal(e.Value(), &g); err != nil {
		return nil, fmt.Errorf("worker: generation record: %w", err)
	}
	return &g, nil
}

// awaitGeneration reports m to the leader every heartbeat until a generation newer
// than m.Generation that includes this worker appears; it returns it and this
// worker's rank. Generations without this worker are waited out (it is admitted
// at the next one); others, when set, sees each of them.
func (c *trainControl) awaitGeneration(ctx context.Context, m natsutil.TrainReady, others func(*natsutil.GenerationInfo)) (*natsutil.GenerationInfo, int, error) {
	var lastReady time.Time
	seen := m.Generation
	for {
		if time.Since(lastReady) >= c.heartbeat {
			err := c.ready(ctx, m)
			if errors.Is(err, natsutil.ErrRemote) {
				return nil, 0, fatal(fmt.Errorf("worker: the coordinator refused this worker: %w", err))
			}
			if err != nil && ctx.Err() == nil {
				c.log.Warn("readiness report not delivered; retrying", "err", err)
			}
			lastReady = time.Now()
		}
		g, err := c.generation(ctx)
		if err != nil && ctx.Err() == nil {
			c.log.Debug("read generation", "err", err)
		}
		if g != nil && g.Number > seen {
			for r, ri := range g.Ranks {
				if ri.Worker == m.Worker {
					return g, r, nil
				}
			}
			c.log.Info("generation formed without this worker; waiting to be admitted", "generation", g.Number, "world", len(g.Ranks))
			seen = g.Number
			if others != nil {
				others(g)
			}
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// rendezvous puts this rank's live address for generation g and returns every
// rank's, waiting up to timeout for the others. A newer generation appearing
// meanwhile ends the wait with an error (this one was superseded).
func (c *trainControl) rendezvous(ctx context.Context, g *natsutil.GenerationInfo, rank int, addr string, timeout time.Duration) ([]string, error) {
	if _, err := c.kv.Put(ctx, natsutil.RendezvousKey(g.Number, rank), []byte(addr)); err != nil {
		return nil, fmt.Errorf("worker: rendezvous of generation %d: %w", g.Number, err)
	}
	peers := make([]string, len(g.Ranks))
	deadline := time.Now().Add(timeout)
	for {
		missing := -1
		for r := range peers {
			if peers[r] != "" {
				continue
			}
			e, err := c.kv.Get(ctx, natsutil.RendezvousKey(g.Number, r))
			if err != nil {
				missing = r
				continue
			}
			peers[r] = string(e.Value())
		}
		if missing < 0 {
			return peers, nil
		}
		if time.Now().After(deadline) {
			ri := g.Ranks[missing]
			return nil, fmt.Errorf("worker: generation %d: rank %d (%s at %s) did not reach the rendezvous within %v", g.Number, missing, ri.Worker, ri.Addr, timeout)
		}
		if cur, err := c.generation(ctx); err == nil && cur != nil && cur.Number > g.Number {
			return nil, fmt.Errorf("worker: generation %d was superseded by %d during the rendezvous", g.Number, cur.Number)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// progress publishes one rank's report (best effort: a leader change loses one).
func (c *trainControl) progress(p natsutil.TrainProgress) {
	data, err := json.Marshal(p)
	if err != nil {
		return
	}
	if err := c.nc.Publish(c.names.Coord("train.progress"), data); err != nil {
		c.log.Debug("progress report", "err", err)
	}
}
