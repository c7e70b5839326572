package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// Options configure a coordinator voter.
type Options struct {
	// ID is this voter's raft server id; RaftAddr its raft TCP address (a private
	// HOST:PORT; it is also the address other voters dial).
	ID, RaftAddr string
	// DataDir holds raft.db (log and stable store) and snapshots.
	DataDir string
	// Bootstrap starts a new single-voter cluster when DataDir holds no raft state.
	Bootstrap bool
	// Join lists ids of existing voters to ask (over NATS) to add this one, when
	// DataDir holds no raft state. Followers redirect the request to the leader.
	Join []string
	// Conn is the NATS connection (credentials already applied).
	Conn *nats.Conn
	// Job names the job: stream, consumer, bucket and subjects derive from it.
	Job string
	// MaxDeliver bounds the attempts of a mask task; LeaseTTL is a lease's length;
	// AckWait is how long JetStream waits for a worker's (progress) ack; Heartbeat is
	// the workers' heartbeat interval (alive = seen within 3 heartbeats).
	MaxDeliver        int
	LeaseTTL, AckWait time.Duration
	Heartbeat         time.Duration
	// ReconcileEvery is how often the leader expires leases and reconciles the queue.
	ReconcileEvery time.Duration
	// HeartbeatCommit is how old a live worker's committed liveness may get before
	// its next heartbeat goes through raft (default 1.5 × Heartbeat, so the registry
	// every voter serves stays within the 3-heartbeat alive window). Heartbeats in
	// between, from workers already registered with the same roles and host, are
	// coalesced: they cost no raft command.
	HeartbeatCommit time.Duration
	// MaxBatch caps the commands in one raft entry (default 2000).
	MaxBatch int
	// Proposers is how many batch entries may be in flight at once (default 8).
	Proposers int
	// ElectionTimeout is raft's heartbeat and election timeout (default 1s; the leader
	// lease is half of it). A single in-process voter (`samdiffsr run`) uses less.
	ElectionTimeout time.Duration
	// Log receives the coordinator's logs; RaftLog raft's own, from RaftLogLevel up
	// ("warn" by default; "error" hides routine election notices).
	Log          *slog.Logger
	RaftLog      io.Writer
	RaftLogLevel string
	// Metrics, when set, receives the coordinator's Prometheus series.
	Metrics prometheus.Registerer
	// Now is the leader's clock (default time.Now).
	Now func() time.Time
	// Train configures how training generations are formed (cluster.train; zero
	// fields take configs' defaults: 1 worker, 2s regroup grace, 15s lost-after).
	Train configs.ClusterTrain
	// TrainTick is how often the leader decides about generations (default 200ms).
	TrainTick time.Duration
}

func (o *Options) defaults() {
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = 4
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 2 * time.Minute
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 2 * time.Second
	}
	if o.ReconcileEvery <= 0 {
		o.ReconcileEvery = 2 * time.Second
	}
	if o.HeartbeatCommit <= 0 {
		o.HeartbeatCommit = o.Heartbeat * 3 / 2
	}
	if o.ElectionTimeout <= 0 {
		o.ElectionTimeout = time.Second
	}
	if o.Proposers <= 0 {
		o.Proposers = 8
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 2000
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.RaftLog == nil {
		o.RaftLog = os.Stderr
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Train.MinWorkers < 1 {
		o.Train.MinWorkers = 1
	}
	if o.Train.RegroupGrace <= 0 {
		o.Train.RegroupGrace = 2 * time.Second
	}
	if o.Train.LostAfter <= 0 {
		o.Train.LostAfter = 15 * time.Second
	}
	if o.TrainTick <= 0 {
		o.TrainTick = 200 * time.Millisecond
	}
}

// Node is one coordinator voter: raft with the FSM, NATS request handlers, and the
// leader loop while it leads.
type Node struct {
	opts  Options
	log   *slog.Logger
	names natsutil.Names
	fsm   *FSM
	raft  *raft.Raft
	trans *raft.NetworkTransport
	store *raftboltdb.BoltStore
	js    jetstream.JetStream
	props chan proposal
	kick  chan struct{}
	// gaveUp holds the tasks the last reconcile found given up on by JetStream
	// (leader goroutine only; see Confirm).
	gaveUp map[string]bool
	// hbMu guards hbProposed: the leader's latest heartbeat proposal per worker, so
	// heartbeats arriving while one is in flight are coalesced too.
	hbMu       sync.Mutex
	hbProposed map[string]*ProposedHeartbeat
	subs       []*nats.Subscription
	m          *metrics
	// train is the training duty of the current leadership term (nil when not leading).
	train atomic.Pointer[trainLeader]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type proposal struct {
	cmd  Command
	done func(Result, error)
}

// Start opens (or creates) the raft state in opts.DataDir, joins or bootstraps the
// cluster as asked and starts serving. Close stops it.
func Start(ctx context.Context, opts Options) (*Node, error) {
	opts.defaults()
	if opts.ID == "" || opts.RaftAddr == "" || opts.DataDir == "" || opts.Conn == nil || opts.Job == "" {
		return nil, errors.New("coordinator: id, raft address, data dir, NATS connection and job are required")
	}
	if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("coordinator: data dir: %w", err)
	}
	js, err := jetstream.New(opts.Conn, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, fmt.Errorf("coordinator: jetstream: %w", err)
	}
	n := &Node{opts: opts, log: opts.Log.With("node", opts.ID), names: natsutil.NamesFor(opts.Job), fsm: NewFSM(), js: js,
		props: make(chan proposal, 16384), kick: make(chan struct{}, 1)}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.fsm.onApply = func(cmd Command, res Result) {
		if addedImages(cmd, res) {
			select {
			case n.kick <- struct{}{}:
			default:
			}
		}
	}
	if err := n.openRaft(); err != nil {
		n.cancel()
		return nil, err
	}
	n.m = newMetrics(n, opts.Metrics)
	// Several batches in flight: raft writes the entries queued meanwhile with one
	// fsync (and pipelines them to followers), so more proposers mean bigger writes.
	for range n.opts.Proposers {
		n.wg.Add(1)
		go n.proposer()
	}
	if err := n.subscribeAll(); err != nil {
		n.Close()
		return nil, err
	}
	if len(opts.Join) > 0 && n.raft.LastIndex() == 0 {
		n.wg.Add(1)
		go n.join()
	}
	return n, nil
}

// addedImages reports whether cmd (or a command in its batch) added images, so the
// leader has new tasks to publish.
func addedImages(cmd Command, res Result) bool {
	if cmd.Kind == CmdAddImages {
		return res.Added > 0
	}
	if cmd.Kind == CmdBatch && len(res.Batch) == len(cmd.Batch) {
		for i, c := range cmd.Batch {
			if addedImages(c, res.Batch[i]) {
				return true
			}
		}
	}
	return false
}

func (n *Node) openRaft() error {
	o := n.opts
	lvl := hclog.LevelFromString(o.RaftLogLevel)
	if lvl == hclog.NoLevel {
		lvl = hclog.Warn
	}
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft " + o.ID, Level: lvl, Output: o.RaftLog})
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(o.DataDir, "raft.db")})
	if err != nil {
		return fmt.Errorf("coordinator: open raft log %s: %w", filepath.Join(o.DataDir, "raft.db"), err)
	}
	n.store = store
	snaps, err := raft.NewFileSnapshotStoreWithLogger(o.DataDir, 2, hl)
	if err != nil {
		store.Close()
		return fmt.Errorf("coordinator: snapshot store: %w", err)
	}
	addr, err := net.ResolveTCPAddr("tcp", o.RaftAddr)
	if err != nil {
		store.Close()
		return fmt.Errorf("coordinator: raft address %q: %w", o.RaftAddr, err)
	}
	trans, err := raft.NewTCPTransportWithLogger(o.RaftAddr, addr, 4, 5*time.Second, hl)
	if err != nil {
		store.Close()
		return fmt.Errorf("coordinator: raft transport on %s: %w", o.RaftAddr, err)
	}
	n.trans = trans
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(o.ID)
	conf.Logger = hl
	// By default raft's own timeouts (1s heartbeat/election, 500ms lease): failover in
	// 1-3s, and no needless elections on a loaded machine.
	conf.HeartbeatTimeout = o.ElectionTimeout
	conf.ElectionTimeout = o.ElectionTimeout
	conf.LeaderLeaseTimeout = o.ElectionTimeout / 2
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotThreshold = 4096
	conf.SnapshotInterval = 10 * time.Second
	conf.TrailingLogs = 4096
	conf.MaxAppendEntries = 256
	notify := make(chan bool, 16)
	conf.NotifyCh = notify
	r, err := raft.NewRaft(conf, n.fsm, store, store, snaps, trans)
	if err != nil {
		trans.Close()
		store.Close()
		return fmt.Errorf("coordinator: start raft: %w", err)
	}
	n.raft = r
	if o.Bootstrap {
		has, err := raft.HasExistingState(store, store, snaps)
		if err != nil {
			return fmt.Errorf("coordinator: inspect raft state: %w", err)
		}
		if !has {
			cfg := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: conf.LocalID, Address: trans.LocalAddr()}}}
			if err := r.BootstrapCluster(cfg).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
				return fmt.Errorf("coordinator: bootstrap: %w", err)
			}
			n.log.Info("bootstrapped a new cluster", "raft_addr", o.RaftAddr)
		}
	}
	n.wg.Add(1)
	go n.watchLeadership(notify)
	return nil
}

// watchLeadership runs the leader loop while this voter leads.
func (n *Node) watchLeadership(notify <-chan bool) {
	defer n.wg.Done()
	type run struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	var cur *run
	end := func() {
		if cur != nil {
			cur.cancel()
			<-cur.done
			cur = nil
		}
	}
	defer end()
	for {
		select {
		case <-n.ctx.Done():
			return
		case isLeader := <-notify:
			if isLeader && cur == nil {
				lctx, cancel := context.WithCancel(n.ctx)
				cur = &run{cancel: cancel, done: make(chan struct{})}
				go func(r *run) {
					defer close(r.done)
					n.lead(lctx)
				}(cur)
			} else if !isLeader {
				end()
			}
		}
	}
}

// Close stops serving and shuts raft down.
func (n *Node) Close() error {
	for _, s := range n.subs {
		s.Unsubscribe()
	}
	n.cancel()
	var errs []error
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown().Error())
	}
	n.wg.Wait()
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

// IsLeader reports whether this voter currently leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// View calls fn with the current replicated state (read-only).
func (n *Node) View(fn func(s *State)) { n.fsm.View(fn) }

// Status builds the status this voter reports.
func (n *Node) Status() natsutil.Status {
	var st natsutil.Status
	now := n.opts.Now()
	var view TrainView
	if tl := n.train.Load(); tl != nil && n.IsLeader() {
		view = tl.snapshot()
	}
	n.fsm.View(func(s *State) {
		st = BuildStatus(s, now, 3*n.opts.Heartbeat)
		st.Train = BuildTrainStatus(s, view, now, n.trainPolicy())
		st.Registry = BuildRegistryStatus(s)
		st.Dataset = BuildDatasetStatus(s)
	})
	st.Node = n.opts.ID
	_, id := n.raft.LeaderWithID()
	st.Leader = string(id)
	st.Term, _ = strconv.ParseUint(n.raft.Stats()["term"], 10, 64)
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			st.Voters = append(st.Voters, natsutil.VoterStatus{ID: string(s.ID), Addr: string(s.Address), Suffrage: s.Suffrage.String()})
		}
	}
	return st
}

// Propose replicates cmd through raft (batched with other proposals) and returns its
// result. It fails with a retryable error when this voter is not the leader.
func (n *Node) Propose(ctx context.Context, cmd Command) (Result, error) {
	ch := make(chan struct {
		r Result
		e error
	}, 1)
	n.propose(cmd, func(r Result, e error) {
		ch <- struct {
			r Result
			e error
		}{r, e}
	})
	select {
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case x := <-ch:
		return x.r, x.e
	}
}

func (n *Node) propose(cmd Command, done func(Result, error)) {
	select {
	case n.props <- proposal{cmd: cmd, done: done}:
	case <-n.ctx.Done():
		done(Result{}, errors.New("coordinator: shutting down"))
	}
}

// proposer applies queued proposals as batch commands: everything that queued while
// the previous apply was in flight goes into one raft entry (one fsync).
func (n *Node) proposer() {
	defer n.wg.Done()
	batch := make([]proposal, 0, n.opts.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-n.ctx.Done():
			return
		case p := <-n.props:
			batch = append(batch, p)
		}
	fill:
		for len(batch) < n.opts.MaxBatch {
			select {
			case p := <-n.props:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		cmd := Command{Kind: CmdBatch, At: n.opts.Now().UnixNano(), Batch: make([]Command, len(batch))}
		for i, p := range batch {
			cmd.Batch[i] = p.cmd
		}
		res, err := n.apply(cmd)
		for i, p := range batch {
			if err != nil {
				p.done(Result{}, err)
			} else {
				p.done(res.Batch[i], nil)
			}
		}
	}
}

func (n *Node) apply(cmd Command) (Result, error) {
	data, err := cmd.Encode()
	if err != nil {
		return Result{}, err
	}
	f := n.raft.Apply(data, 10*time.Second)
	if err := f.Error(); err != nil {
		return Result{}, fmt.Errorf("coordinator: raft apply: %w", err)
	}
	res, _ := f.Response().(Result)
	if n.m != nil {
		n.m.batches.Observe(float64(len(cmd.Batch)))
	}
	return res, nil
}

// retryable reports whether a proposal error means "ask again, maybe elsewhere".
func retryable(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrRaftShutdown) ||
		errors.Is(err, raft.ErrEnqueueTimeout)
}

func (n *Node) reply(m *nats.Msg, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		n.log.Error("encode reply", "err", err)
		return
	}
	if m.Reply != "" {
		m.Respond(data)
	}
}

func (n *Node) replyResult(m *nats.Msg, res Result, err error) {
	rep := natsutil.Reply{Outcome: string(res.Outcome), State: string(res.State), Added: res.Added}
	if err != nil {
		rep.Err, rep.Retry = err.Error(), true
		if !retryable(err) {
			rep.Retry = true // raft errors are transient from a client's view
		}
		_, id := n.raft.LeaderWithID()
		rep.Leader = string(id)
	} else if res.Outcome == Rejected && res.State == "" {
		rep.Err = res.Err
	}
	n.reply(m, rep)
}

// join asks the listed voters to add this one, following redirects to the leader.
func (n *Node) join() {
	defer n.wg.Done()
	req := natsutil.MemberRequest{ID: n.opts.ID, Addr: string(n.trans.LocalAddr())}
	targets := append([]string(nil), n.opts.Join...)
	for i := 0; ; i++ {
		if n.ctx.Err() != nil {
			return
		}
		if n.raft.LastIndex() > 0 && n.raft.Leader() != "" {
			if f := n.raft.GetConfiguration(); f.Error() == nil {
				for _, s := range f.Configuration().Servers {
					if s.ID == raft.ServerID(n.opts.ID) {
						n.log.Info("joined the cluster", "leader", n.raft.Leader())
						return
					}
				}
			}
		}
		target := targets[i%len(targets)]
		var rep natsutil.Reply
		err := natsutil.Request(n.ctx, n.opts.Conn, n.names.CoordNode(target, "member"), req, &rep, 15*time.Second)
		switch {
		case err == nil && rep.Err == "":
			n.log.Info("joined the cluster", "through", target)
			return
		case err == nil && rep.Leader != "":
			targets = append(targets, rep.Leader)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(300 * time.Millisecond):
		}
	}
}
