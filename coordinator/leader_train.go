package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// trainLeader is the training side of one term of leadership: the in-memory view of
// the training workers (never replicated; a new leader rebuilds it from the reports
// workers resend every heartbeat or second), and what it has published.
type trainLeader struct {
	n   *Node
	log *slog.Logger

	mu   sync.Mutex
	view TrainView
	// firstStep is the generation whose first step this leader proposed.
	firstStep int
	// kv is the training bucket once set up (tick goroutine only); published the
	// generation number the bucket is known to hold.
	kv        jetstream.KeyValue
	published int
}

func (n *Node) trainPolicy() TrainPolicy {
	return TrainPolicy{ClusterTrain: n.opts.Train, Heartbeat: n.opts.Heartbeat}
}

// leadTrain starts the training duty of the leader: it serves Coord("train.ready")
// and Coord("train.progress"), and every TrainTick decides (DecideTrain) and
// proposes generation boundaries, and keeps the generation in the training bucket.
// The returned function stops it.
func (n *Node) leadTrain(ctx context.Context, log *slog.Logger) (stop func(), err error) {
	tl := &trainLeader{n: n, log: log.With("duty", "train"),
		view: TrainView{Ready: map[string]ReadyReport{}, Progress: map[string]ProgressReport{}, LeaderSince: n.opts.Now()}}
	var subs []*nats.Subscription
	unsub := func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}
	for subj, h := range map[string]nats.MsgHandler{
		n.names.Coord("train.ready"):    tl.handleReady,
		n.names.Coord("train.progress"): tl.handleProgress,
	} {
		s, err := n.opts.Conn.Subscribe(subj, h)
		if err != nil {
			unsub()
			return nil, fmt.Errorf("coordinator: subscribe %s: %w", subj, err)
		}
		s.SetPendingLimits(-1, -1)
		subs = append(subs, s)
	}
	n.train.Store(tl)
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tl.run(tctx)
	}()
	return func() {
		unsub()
		cancel()
		<-done
		n.train.CompareAndSwap(tl, nil)
		n.m.trainReset()
	}, nil
}

// run sets up the bucket, republishes the latest generation, then ticks.
func (tl *trainLeader) run(ctx context.Context) {
	n := tl.n
	for {
		err := tl.ensureBucket(ctx)
		if err == nil {
			break
		}
		tl.log.Warn("set up the training bucket (retrying)", "bucket", n.names.TrainBucket(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	tl.publish(ctx)
	tl.purgeRendezvous(ctx)
	tick := time.NewTicker(n.opts.TrainTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			tl.tick(ctx)
		}
	}
}

// ensureBucket opens (creating when missing) the job's training bucket and reads
// which generation it holds, so a new leader re-puts only when it differs.
func (tl *trainLeader) ensureBucket(ctx context.Context) error {
	n := tl.n
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	name := n.names.TrainBucket()
	kv, err := n.js.KeyValue(cctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = n.js.CreateKeyValue(cctx, jetstream.KeyValueConfig{Bucket: name, History: 1, Storage: jetstream.FileStorage,
			Description: "training generations and rendezvous of job " + n.opts.Job})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = n.js.KeyValue(cctx, name)
		}
	}
	if err != nil {
		return fmt.Errorf("training bucket %s: %w", name, err)
	}
	tl.kv, tl.published = kv, 0
	e, err := kv.Get(cctx, natsutil.TrainGenerationKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("training bucket %s: read %s: %w", name, natsutil.TrainGenerationKey, err)
	default:
		var gi natsutil.GenerationInfo
		if json.Unmarshal(e.Value(), &gi) == nil {
			var same bool
			n.fsm.View(func(s *State) {
				g := s.LastGeneration()
				same = g != nil && g.Number == gi.Number && g.Secret == gi.Secret
			})
			if same {
				tl.published = gi.Number
			}
		}
	}
	return nil
}

// publish puts the latest committed generation under TrainGenerationKey unless the
// bucket already holds it.
func (tl *trainLeader) publish(ctx context.Context) {
	var info natsutil.GenerationInfo
	n := tl.n
	n.fsm.View(func(s *State) {
		if g := s.LastGeneration(); g != nil {
			info = g.Info()
		}
	})
	if info.Number == 0 || info.Number == tl.published || tl.kv == nil {
		return
	}
	data, err := json.Marshal(info)
	if err != nil {
		tl.log.Error("encode generation", "err", err)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := tl.kv.Put(cctx, natsutil.TrainGenerationKey, data); err != nil {
		tl.log.Warn("put generation (retrying next tick)", "generation", info.Number, "err", err)
		return
	}
	tl.published = info.Number
	tl.log.Info("generation published", "generation", info.Number, "world", len(info.Ranks))
}

// purgeRendezvous removes the rendezvous keys of generations older than the
// previous one.
func (tl *trainLeader) purgeRendezvous(ctx context.Context) {
	if tl.kv == nil {
		return
	}
	var latest int
	tl.n.fsm.View(func(s *State) {
		if g := s.LastGeneration(); g != nil {
			latest = g.Number
		}
	})
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	keys, err := tl.kv.Keys(cctx)
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) {
			tl.log.Debug("list training keys", "err", err)
		}
		return
	}
	for _, k := range keys {
		if gen, ok := rendezvousGeneration(k); ok && gen < latest-1 {
			if err := tl.kv.Purge(cctx, k); err != nil {
				tl.log.Debug("purge rendezvous key", "key", k, "err", err)
			}
		}
	}
}

// rendezvousGeneration parses the generation of a natsutil.RendezvousKey.
func rendezvousGeneration(key string) (int, bool) {
	rest, ok := strings.CutPrefix(key, "g")
	if !ok {
		return 0, false
	}
	gen, rank, ok := strings.Cut(rest, ".r")
	if !ok {
		return 0, false
	}
	g, err := strconv.Atoi(gen)
	if err != nil {
		return 0, false
	}
	if _, err := strconv.Atoi(rank); err != nil {
		return 0, false
	}
	return g, true
}

// tick decides and carries out one training action.
func (tl *trainLeader) tick(ctx context.Context) {
	n := tl.n
	tl.publish(ctx)
	now := n.opts.Now()
	p := n.trainPolicy()
	var act TrainAction
	tl.mu.Lock()
	tl.prune(now, p)
	n.fsm.View(func(s *State) { act = DecideTrain(s, tl.view, now, p) })
	tl.mu.Unlock()
	switch {
	case act.End != nil:
		e := act.End
		res, err := n.Propose(ctx, Command{Kind: CmdGenEnd, GenEnd: e})
		if err != nil || res.Outcome != OK {
			tl.log.Warn("end generation", "generation", e.Number, "outcome", res.Outcome, "why", res.Err, "err", err)
			return
		}
		tl.log.Info("generation ended", "generation", e.Number, "reason", e.Reason, "last_step", e.LastStep, "lost", e.Lost)
	case act.Commit != nil:
		c := act.Commit
		secret, err := NewSecret()
		if err != nil {
			tl.log.Error("generation secret", "err", err)
			return
		}
		c.Secret = secret
		res, err := n.Propose(ctx, Command{Kind: CmdGenCommit, GenCommit: c})
		if err != nil || res.Outcome != OK {
			tl.log.Warn("commit generation", "generation", c.Number, "outcome", res.Outcome, "why", res.Err, "err", err)
			return
		}
		workers := make([]string, len(c.Ranks))
		for i, r := range c.Ranks {
			workers[i] = r.Worker
		}
		tl.log.Info("generation committed", "generation", c.Number, "ranks", workers, "stage", c.Stage,
			"start_step", c.StartStep, "end_step", c.EndStep, "source", c.Source, "lost", c.Lost)
		n.m.trainReset()
		tl.publish(ctx)
		tl.purgeRendezvous(ctx)
	}
}

// prune forgets reports too old to matter to any decision.
func (tl *trainLeader) prune(now time.Time, p TrainPolicy) {
	keep := p.readyWindow() + p.RegroupGrace + p.LostAfter + time.Minute
	for w, r := range tl.view.Ready {
		if now.Sub(r.At) > keep {
			delete(tl.view.Ready, w)
		}
	}
	for w, r := range tl.view.Progress {
		if now.Sub(r.At) > keep {
			delete(tl.view.Progress, w)
		}
	}
}

// handleReady records a worker waiting for a generation (or leaving one, or done).
func (tl *trainLeader) handleReady(m *nats.Msg) {
	n := tl.n
	var r natsutil.TrainReady
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Worker == "" || (r.Addr == "" && !r.Finished) {
		n.reply(m, natsutil.Reply{Err: fmt.Sprintf("bad train.ready %q: a worker id and its collective address are required", m.Data)})
		return
	}
	if !n.IsLeader() {
		n.replyResult(m, Result{}, raft.ErrNotLeader)
		return
	}
	var want string
	n.View(func(s *State) { want = JobTrainHash(s) })
	if want != "" && r.TrainHash != want && !r.Finished {
		n.reply(m, natsutil.Reply{Err: fmt.Sprintf("worker %s trains with configuration hash %.12s, the job's generations with %.12s: "+
			"start it with the job's configuration (seed, model, diffusion, masks, data sizes and train must match; paths may differ)", r.Worker, r.TrainHash, want)})
		return
	}
	now := n.opts.Now()
	window := n.trainPolicy().readyWindow()
	tl.mu.Lock()
	since := now
	if prev, ok := tl.view.Ready[r.Worker]; ok && now.Sub(prev.At) <= window && prev.Generation == r.Generation &&
		prev.Finished == r.Finished {
		since = prev.Since
	}
	tl.view.Ready[r.Worker] = ReadyReport{TrainReady: r, At: now, Since: since}
	tl.mu.Unlock()
	n.reply(m, natsutil.Reply{Outcome: string(OK)})
}

// handleProgress records a rank's progress and, on the generation's first reported
// step, proposes generation.first_step once.
func (tl *trainLeader) handleProgress(m *nats.Msg) {
	n := tl.n
	var p natsutil.TrainProgress
	if err := json.Unmarshal(m.Data, &p); err != nil || p.Worker == "" {
		return
	}
	now := n.opts.Now()
	var active, rank int
	var recorded bool
	n.fsm.View(func(s *State) {
		if g := s.ActiveGeneration(); g != nil {
			active, recorded = g.Number, g.FirstStepAt != 0
			rank = -1
			for i, w := range g.Ranks {
				if w == p.Worker {
					rank = i
				}
			}
		}
	})
	tl.mu.Lock()
	tl.view.Progress[p.Worker] = ProgressReport{TrainProgress: p, At: now}
	propose := p.Generation == active && active != 0 && !p.FirstStepAt.IsZero() && !recorded && tl.firstStep != active
	if propose {
		tl.firstStep = active
	}
	tl.mu.Unlock()
	if p.Generation == active && rank >= 0 {
		n.m.rankRate(rank, p.Worker, p.StepsPerS)
	}
	if !propose {
		return
	}
	n.propose(Command{Kind: CmdGenFirstStep, GenFirstStep: &GenerationFirstStep{Number: active, At: p.FirstStepAt.UnixNano()}},
		func(res Result, err error) {
			if err != nil {
				tl.mu.Lock()
				if tl.firstStep == active {
					tl.firstStep = 0
				}
				tl.mu.Unlock()
				return
			}
			tl.log.Info("generation's first step", "generation", active, "outcome", res.Outcome)
		})
}

// snapshot returns a copy of the view (for status).
func (tl *trainLeader) snapshot() TrainView {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	v := TrainView{Ready: make(map[string]ReadyReport, len(tl.view.Ready)),
		Progress: make(map[string]ProgressReport, len(tl.view.Progress)), LeaderSince: tl.view.LeaderSince}
	for k, r := range tl.view.Ready {
		v.Ready[k] = r
	}
	for k, r := range tl.view.Progress {
		v.Progress[k] = r
	}
	return v
}
