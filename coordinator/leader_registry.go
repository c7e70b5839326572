package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore"
)

// registryLeader is the checkpoint-registry duty of one term of leadership: it
// commits published checkpoints (after checking their objects are in the bucket),
// applies retention (records first, objects after) and sets tags. One request at a
// time, so a retention decision never races a commit.
type registryLeader struct {
	n   *Node
	log *slog.Logger

	mu    sync.Mutex
	store *objstore.Store
}

// leadRegistry serves Coord("checkpoints.publish") and Coord("checkpoints.tag")
// while this voter leads. The returned function stops it.
func (n *Node) leadRegistry(log *slog.Logger) (stop func(), err error) {
	rl := &registryLeader{n: n, log: log.With("duty", "registry")}
	var subs []*nats.Subscription
	unsub := func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}
	for subj, h := range map[string]nats.MsgHandler{
		n.names.Coord("checkpoints.publish"): func(m *nats.Msg) { go rl.handlePublish(m) },
		n.names.Coord("checkpoints.tag"):     func(m *nats.Msg) { go rl.handleTag(m) },
		n.names.Coord("checkpoints.pulled"):  func(*nats.Msg) { n.m.registryPull() },
	} {
		s, err := n.opts.Conn.Subscribe(subj, h)
		if err != nil {
			unsub()
			return nil, fmt.Errorf("coordinator: subscribe %s: %w", subj, err)
		}
		subs = append(subs, s)
	}
	return unsub, nil
}

// bucket opens the job's checkpoint bucket (creating it), once per term.
func (rl *registryLeader) bucket(ctx context.Context) (*objstore.Store, error) {
	if rl.store != nil {
		return rl.store, nil
	}
	st, err := objstore.Open(ctx, rl.n.js, rl.n.names.CheckpointBucket(), objstore.Options{Create: true,
		Description: "samdiffsr checkpoints of job " + rl.n.names.Job})
	if err != nil {
		return nil, err
	}
	rl.store = st
	return st, nil
}

func (rl *registryLeader) handlePublish(m *nats.Msg) {
	n := rl.n
	var req natsutil.CheckpointPublish
	if err := json.Unmarshal(m.Data, &req); err != nil {
		n.reply(m, natsutil.Reply{Err: "bad checkpoint publish request: " + err.Error()})
		return
	}
	if why := validInfo(req.Checkpoint); why != "" {
		n.reply(m, natsutil.Reply{Err: why})
		return
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	st, err := rl.bucket(ctx)
	if err != nil {
		n.reply(m, natsutil.Reply{Err: err.Error(), Retry: true})
		return
	}
	// Upload, then commit: every file must already be in the bucket, whole.
	for _, f := range req.Checkpoint.Files {
		info, err := st.Stat(ctx, natsutil.CheckpointObject(f.SHA256))
		if err != nil || info.SHA256 != f.SHA256 || info.Size != f.Size {
			n.reply(m, natsutil.Reply{Err: fmt.Sprintf("file %s of checkpoint %s (sha256 %.12s, %d bytes) is not in bucket %s as listed (%v); upload every file before publishing",
				f.Name, req.Checkpoint.ID, f.SHA256, f.Size, st.Bucket(), statSays(info, err))})
			return
		}
	}
	res, err := n.Propose(ctx, Command{Kind: CmdCkptCommit, CkptCommit: &CheckpointCommit{Checkpoint: req.Checkpoint}})
	if err != nil || res.Outcome == Rejected {
		n.replyResult(m, res, err)
		return
	}
	rep := natsutil.Reply{Outcome: string(res.Outcome), Seq: res.Seq}
	if res.Outcome == Duplicate {
		n.reply(m, rep)
		return
	}
	n.m.registryCommit(req.Checkpoint)
	rl.log.Info("checkpoint committed", "id", req.Checkpoint.ID, "seq", res.Seq, "worker", req.Worker)
	removed, err := rl.retain(ctx, req.Retention)
	if err != nil {
		rl.log.Warn("retention", "err", err)
	}
	for _, r := range removed {
		rep.Pruned = append(rep.Pruned, r.ID)
	}
	rl.deleteObjects(ctx, st, removed)
	n.reply(m, rep)
	var committed natsutil.CheckpointInfo
	n.fsm.View(func(s *State) {
		if i := s.Registry.find(req.Checkpoint.ID); i >= 0 {
			committed = cloneInfo(s.Registry.Records[i])
		}
	})
	if data, err := json.Marshal(committed); err == nil {
		n.opts.Conn.Publish(n.names.Coord("checkpoints.committed"), data)
	}
}

// retain commits the removal of the records the policy no longer keeps and returns
// them.
func (rl *registryLeader) retain(ctx context.Context, pol natsutil.CheckpointRetention) ([]natsutil.CheckpointInfo, error) {
	n := rl.n
	var drop []string
	n.fsm.View(func(s *State) { drop = Retain(s.Registry, pol) })
	if len(drop) == 0 {
		return nil, nil
	}
	var removed []natsutil.CheckpointInfo
	n.fsm.View(func(s *State) {
		for _, id := range drop {
			if i := s.Registry.find(id); i >= 0 {
				removed = append(removed, cloneInfo(s.Registry.Records[i]))
			}
		}
	})
	if _, err := n.Propose(ctx, Command{Kind: CmdCkptPrune, CkptPrune: drop}); err != nil {
		return nil, fmt.Errorf("prune %v: %w", drop, err)
	}
	// Apply keeps a record tagged meanwhile: report only what is gone.
	gone := removed[:0]
	n.fsm.View(func(s *State) {
		for _, r := range removed {
			if s.Registry.find(r.ID) < 0 {
				gone = append(gone, r)
			}
		}
	})
	n.m.registryPruned(len(gone))
	return gone, nil
}

// deleteObjects deletes the objects of removed records that no committed record
// still references. A failure only leaves an orphaned object behind.
func (rl *registryLeader) deleteObjects(ctx context.Context, st *objstore.Store, removed []natsutil.CheckpointInfo) {
	if len(removed) == 0 {
		return
	}
	var names []string
	rl.n.fsm.View(func(s *State) { names = Unreferenced(s.Registry, removed) })
	for _, name := range names {
		if err := st.Delete(ctx, name); err != nil {
			rl.log.Warn("delete pruned checkpoint object (left orphaned)", "object", name, "err", err)
		}
	}
	ids := make([]string, len(removed))
	for i, r := range removed {
		ids[i] = r.ID
	}
	rl.log.Info("checkpoints pruned", "ids", ids, "objects_deleted", len(names))
}

func (rl *registryLeader) handleTag(m *nats.Msg) {
	n := rl.n
	var req natsutil.CheckpointTag
	if err := json.Unmarshal(m.Data, &req); err != nil {
		n.reply(m, natsutil.Reply{Err: "bad checkpoint tag request: " + err.Error()})
		return
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	res, err := n.Propose(ctx, Command{Kind: CmdCkptTag, CkptTag: &req})
	n.replyResult(m, res, err)
}

// handleCheckpoints answers a list request from this voter's FSM (any voter).
func (n *Node) handleCheckpoints(m *nats.Msg) {
	var req natsutil.CheckpointListRequest
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &req); err != nil {
			n.reply(m, natsutil.CheckpointList{Err: "bad checkpoint list request: " + err.Error()})
			return
		}
	}
	var out natsutil.CheckpointList
	n.fsm.View(func(s *State) { out = RegistryList(s, req) })
	n.reply(m, out)
}

func statSays(info objstore.Info, err error) string {
	if err != nil {
		if errors.Is(err, objstore.ErrNotFound) {
			return "missing"
		}
		return err.Error()
	}
	return fmt.Sprintf("bucket has sha256 %.12s, %d bytes", info.SHA256, info.Size)
}

// registryMetrics are the coordinator's registry series.
type registryMetrics struct {
	commits, pruned, pulls prometheus.Counter
	bytes                  prometheus.Counter
}

func newRegistryMetrics() registryMetrics {
	return registryMetrics{
		commits: prometheus.NewCounter(prometheus.CounterOpts{Name: "samdiffsr_registry_commits_total",
			Help: "Checkpoints committed to the registry (served by the leader)."}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Name: "samdiffsr_registry_pruned_total",
			Help: "Checkpoints retention removed from the registry."}),
		pulls: prometheus.NewCounter(prometheus.CounterOpts{Name: "samdiffsr_registry_pulls_total",
			Help: "Checkpoint pulls consumers reported."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "samdiffsr_registry_committed_bytes_total",
			Help: "Bytes of the files of committed checkpoints."}),
	}
}

func (r registryMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.commits, r.pruned, r.pulls, r.bytes}
}

func (m *metrics) registryCommit(c natsutil.CheckpointInfo) {
	if m == nil {
		return
	}
	m.registry.commits.Inc()
	for _, f := range c.Files {
		m.registry.bytes.Add(float64(f.Size))
	}
}

func (m *metrics) registryPruned(k int) {
	if m != nil {
		m.registry.pruned.Add(float64(k))
	}
}

func (m *metrics) registryPull() {
	if m != nil {
		m.registry.pulls.Inc()
	}
}
