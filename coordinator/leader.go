package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// lead runs while this voter is the raft leader: it makes sure the stream, consumer
// and bucket exist, serves the write subjects, reconciles the queue with the ledger,
// publishes new tasks and expires leases, and runs the training duty (leadTrain). It returns when ctx ends (leadership lost).
func (n *Node) lead(ctx context.Context) {
	log := n.log.With("role", "leader")
	if err := n.raft.Barrier(30 * time.Second).Error(); err != nil {
		log.Warn("barrier before leading failed", "err", err)
		return
	}
	log.Info("leading", "term", n.raft.Stats()["term"])
	var stream jetstream.Stream
	for {
		var err error
		stream, err = n.ensureJetStream(ctx)
		if err == nil {
			break
		}
		log.Warn("set up JetStream (retrying)", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	n.recordVoters(ctx)
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}()
	for subj, h := range map[string]nats.MsgHandler{
		n.names.Coord("lease"):     n.handleLease,
		n.names.Coord("report"):    n.handleReport,
		n.names.Coord("heartbeat"): n.handleHeartbeat,
		n.names.Coord("submit"):    n.handleSubmit,
	} {
		s, err := n.opts.Conn.Subscribe(subj, h)
		if err != nil {
			log.Error("subscribe", "subject", subj, "err", err)
			return
		}
		s.SetPendingLimits(-1, -1)
		subs = append(subs, s)
	}
	adv, err := n.opts.Conn.Subscribe(maxDeliveriesSubject(n.names), n.handleMaxDeliveries)
	if err != nil {
		log.Error("subscribe to max-deliveries advisories", "err", err)
		return
	}
	subs = append(subs, adv)
	stopTrain, err := n.leadTrain(ctx, log)
	if err != nil {
		log.Error("start the training duty", "err", err)
		return
	}
	defer stopTrain()
	stopRegistry, err := n.leadRegistry(log)
	if err != nil {
		log.Error("start the registry duty", "err", err)
		return
	}
	defer stopRegistry()
	stopDataset, err := n.leadDataset(log)
	if err != nil {
		log.Error("start the dataset duty", "err", err)
		return
	}
	defer stopDataset()
	n.opts.Conn.Flush()

	n.gaveUp = nil
	n.hbMu.Lock()
	n.hbProposed = nil
	n.hbMu.Unlock()
	if err := n.reconcile(ctx, stream); err != nil && ctx.Err() == nil {
		log.Warn("reconcile", "err", err)
	}
	tick := time.NewTicker(n.opts.ReconcileEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("no longer leading")
			return
		case <-n.kick:
			if err := n.publishNew(ctx); err != nil && ctx.Err() == nil {
				log.Warn("publish tasks", "err", err)
			}
		case <-tick.C:
			n.expire(ctx)
			if err := n.reconcile(ctx, stream); err != nil && ctx.Err() == nil {
				log.Warn("reconcile", "err", err)
			}
		}
	}
}

func (n *Node) ensureJetStream(ctx context.Context) (jetstream.Stream, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := n.js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
		Name:        n.names.TaskStream(),
		Description: "samdiffsr tasks of job " + n.opts.Job,
		Subjects:    []string{n.names.TaskSubjects()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  10 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("task stream %s: %w", n.names.TaskStream(), err)
	}
	_, err = stream.CreateOrUpdateConsumer(cctx, jetstream.ConsumerConfig{
		Durable:       n.names.MaskConsumer(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       n.opts.AckWait,
		MaxDeliver:    n.opts.MaxDeliver,
		FilterSubject: n.names.MaskSubject(),
		MaxAckPending: 10000,
	})
	if err != nil {
		return nil, fmt.Errorf("mask consumer: %w", err)
	}
	if _, err := n.js.ObjectStore(cctx, n.names.MaskBucket()); errors.Is(err, jetstream.ErrBucketNotFound) {
		_, err = n.js.CreateObjectStore(cctx, jetstream.ObjectStoreConfig{Bucket: n.names.MaskBucket(), Storage: jetstream.FileStorage,
			Description: "label maps of job " + n.opts.Job + ", keyed by image SHA-256"})
		if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return nil, fmt.Errorf("mask bucket %s: %w", n.names.MaskBucket(), err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("mask bucket %s: %w", n.names.MaskBucket(), err)
	}
	return stream, nil
}

// recordVoters brings the FSM's voter record in line with the raft configuration.
func (n *Node) recordVoters(ctx context.Context) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	var missing []Command
	n.fsm.View(func(s *State) {
		for _, srv := range f.Configuration().Servers {
			if v, ok := s.Voters[string(srv.ID)]; !ok || v.Addr != string(srv.Address) {
				missing = append(missing, Command{Kind: CmdMember, Member: &Member{ID: string(srv.ID), Addr: string(srv.Address)}})
			}
		}
	})
	for _, c := range missing {
		n.Propose(ctx, c)
	}
}

// handleLease starts an attempt. The answer comes from the leader's state at once:
// "skip" when the task is already final (a redelivery after a committed result), else
// go ahead. The lease itself is recorded through raft in the next batch without the
// worker waiting for it: it only informs status and lease expiry, while correctness
// rests on the result being committed once. A lease record lost with a leader cannot
// strand its task: reconcile fails a task whose message JetStream gave up on even when
// the ledger never saw its attempts and the max-deliveries advisory was missed.
func (n *Node) handleLease(m *nats.Msg) {
	var req natsutil.LeaseRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.TaskID == "" || req.Worker == "" {
		n.reply(m, natsutil.Reply{Err: fmt.Sprintf("bad lease request %q", m.Data)})
		return
	}
	if !n.IsLeader() {
		n.replyResult(m, Result{}, raft.ErrNotLeader)
		return
	}
	var st TaskState
	n.fsm.View(func(s *State) {
		if t, ok := s.Tasks[req.TaskID]; ok {
			st = t.State
		}
	})
	switch {
	case st == "":
		n.reply(m, natsutil.Reply{Err: fmt.Sprintf("no mask task %q in the ledger of job %s", req.TaskID, n.opts.Job)})
		return
	case st.Final():
		n.reply(m, natsutil.Reply{Outcome: string(Skip), State: string(st)})
		return
	}
	n.reply(m, natsutil.Reply{Outcome: string(OK), State: string(TaskLeased)})
	n.propose(Command{Kind: CmdLease, Lease: &Lease{TaskID: req.TaskID, Worker: req.Worker, Attempt: req.Attempt}},
		func(Result, error) {})
}

// maxDeliveriesSubject is where JetStream announces a task message that reached the
// consumer's MaxDeliver without an ack (workers lost or timed out on every attempt).
func maxDeliveriesSubject(names natsutil.Names) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + names.TaskStream() + "." + names.MaskConsumer()
}

// handleMaxDeliveries fails a task JetStream gave up on. Tasks whose workers reported
// failures are failed by those reports; this catches the ones no worker ever
// answered for (each attempt lost with its worker), so none stays pending forever.
func (n *Node) handleMaxDeliveries(m *nats.Msg) {
	var adv struct {
		StreamSeq  uint64 `json:"stream_seq"`
		Deliveries int    `json:"deliveries"`
	}
	if err := json.Unmarshal(m.Data, &adv); err != nil {
		return
	}
	var id string
	n.fsm.View(func(s *State) {
		if t, ok := s.TaskBySeq(adv.StreamSeq); ok && !t.State.Final() {
			id = t.ID
		}
	})
	if id == "" {
		return
	}
	reason := fmt.Sprintf("delivered %d times without a result: the worker holding it was lost or timed out every time (cluster.worker.ack_wait)", adv.Deliveries)
	n.log.Warn("task failed: max deliveries reached", "task", id, "deliveries", adv.Deliveries)
	n.propose(Command{Kind: CmdFail, Fail: &Fail{TaskID: id, Attempt: adv.Deliveries, Reason: reason, Final: true}},
		func(Result, error) {})
}

// handleReport commits a result (once) or a failed attempt.
func (n *Node) handleReport(m *nats.Msg) {
	var req natsutil.ReportRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.TaskID == "" || req.Worker == "" {
		n.reply(m, natsutil.Reply{Err: fmt.Sprintf("bad report %q", m.Data)})
		return
	}
	var cmd Command
	if req.OK {
		cmd = Command{Kind: CmdDone, Done: &Done{TaskID: req.TaskID, Worker: req.Worker, Attempt: req.Attempt,
			ImageSHA256: req.ImageSHA256, ResultKey: req.Key, Digest: req.Digest, Regions: req.Regions}}
	} else {
		cmd = Command{Kind: CmdFail, Fail: &Fail{TaskID: req.TaskID, Worker: req.Worker, Attempt: req.Attempt, Reason: req.Reason, Final: req.Final}}
	}
	n.propose(cmd, func(r Result, err error) {
		if err == nil && r.Outcome == Duplicate {
			n.log.Debug("duplicate report ignored", "task", req.TaskID, "worker", req.Worker, "attempt", req.Attempt)
		}
		n.replyResult(m, r, err)
	})
}

// handleHeartbeat commits a worker's heartbeat only when HeartbeatDue says so (a
// new or changed worker, or committed liveness getting old); the rest are coalesced.
func (n *Node) handleHeartbeat(m *nats.Msg) {
	var msg natsutil.HeartbeatMessage
	if err := json.Unmarshal(m.Data, &msg); err != nil || msg.Worker == "" {
		return
	}
	hb := Heartbeat{Worker: msg.Worker, Roles: msg.Roles, Host: msg.Host}
	now := n.opts.Now().UnixNano()
	n.hbMu.Lock()
	var due bool
	n.fsm.View(func(s *State) {
		due = HeartbeatDue(s.Workers[hb.Worker], n.hbProposed[hb.Worker], hb, now, n.opts.HeartbeatCommit)
	})
	if due {
		if n.hbProposed == nil {
			n.hbProposed = map[string]*ProposedHeartbeat{}
		}
		n.hbProposed[hb.Worker] = &ProposedHeartbeat{Heartbeat: hb, At: now}
	}
	n.hbMu.Unlock()
	if !due {
		n.m.heartbeatsCoalesced()
		n.replyResult(m, Result{Outcome: OK}, nil)
		return
	}
	n.propose(Command{Kind: CmdHeartbeat, Heartbeat: &hb}, func(r Result, err error) {
		if err != nil {
			n.hbMu.Lock()
			if p := n.hbProposed[hb.Worker]; p != nil && p.At == now {
				delete(n.hbProposed, hb.Worker)
			}
			n.hbMu.Unlock()
		}
		n.replyResult(m, r, err)
	})
}

// handleSubmit sets the job spec and adds a chunk of the manifest. The job's
// max_deliver and lease TTL are this coordinator's (they must match the consumer).
func (n *Node) handleSubmit(m *nats.Msg) {
	var req natsutil.SubmitRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.Job == "" {
		n.reply(m, natsutil.Reply{Err: fmt.Sprintf("bad submit request (%d bytes): %v", len(m.Data), err)})
		return
	}
	if req.Job != n.opts.Job {
		n.reply(m, natsutil.Reply{Err: fmt.Sprintf("this coordinator runs job %q, not %q (cluster.nats.job)", n.opts.Job, req.Job)})
		return
	}
	imgs := make([]Image, len(req.Images))
	for i, im := range req.Images {
		imgs[i] = Image{ID: im.ID, Path: im.Path, Size: im.Size, SHA256: im.SHA256}
	}
	cmd := Command{Kind: CmdBatch, Batch: []Command{
		{Kind: CmdSetJob, SetJob: &JobSpec{Name: req.Job, ConfigHash: req.ConfigHash, MaxDeliver: n.opts.MaxDeliver, LeaseTTLNanos: int64(n.opts.LeaseTTL)}},
		{Kind: CmdAddImages, Images: imgs},
	}}
	n.propose(cmd, func(r Result, err error) {
		if err == nil {
			for _, sub := range r.Batch {
				if sub.Outcome == Rejected {
					n.reply(m, natsutil.Reply{Err: sub.Err})
					return
				}
			}
			r = r.Batch[1]
		}
		n.replyResult(m, r, err)
	})
}

// publishNew publishes the tasks whose message was never stored.
func (n *Node) publishNew(ctx context.Context) error {
	for {
		var ids []string
		n.fsm.View(func(s *State) { ids = ToPublish(s, 4096) })
		if len(ids) == 0 {
			return nil
		}
		if err := n.publish(ctx, ids); err != nil {
			return err
		}
	}
}

// publish stores one message per task (de-duplication id "<task>#<n>", n the task's
// next publication) and records the sequences in the ledger.
func (n *Node) publish(ctx context.Context, ids []string) error {
	type pending struct {
		id  string
		nth int
		fut jetstream.PubAckFuture
	}
	var ps []pending
	var perr error
	n.fsm.View(func(s *State) {
		for _, id := range ids {
			t, im := s.Tasks[id], s.Images[id]
			if t == nil || im == nil || t.State.Final() {
				continue
			}
			data, err := json.Marshal(natsutil.TaskMessage{ID: id, Path: im.Path, SHA256: im.SHA256, Size: im.Size})
			if err != nil {
				perr = err
				return
			}
			nth := t.Publishes + 1
			fut, err := n.js.PublishAsync(n.names.MaskSubject(), data, jetstream.WithMsgID(fmt.Sprintf("%s#%d", id, nth)))
			if err != nil {
				perr = fmt.Errorf("publish task %s: %w", id, err)
				return
			}
			ps = append(ps, pending{id, nth, fut})
		}
	})
	var recs []Publish
	var errs []error
	if perr != nil {
		errs = append(errs, perr)
	}
	for _, p := range ps {
		select {
		case ack := <-p.fut.Ok():
			recs = append(recs, Publish{TaskID: p.id, Seq: ack.Sequence, Publishes: p.nth})
		case err := <-p.fut.Err():
			errs = append(errs, fmt.Errorf("publish task %s: %w", p.id, err))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if len(recs) > 0 {
		if _, err := n.Propose(ctx, Command{Kind: CmdPublished, Published: recs}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reconcile makes the queue agree with the ledger: messages of final tasks are
// removed, lost messages of unfinished tasks are published again, tasks JetStream
// gave up on (a missed max-deliveries advisory) are failed, new tasks published.
func (n *Node) reconcile(ctx context.Context, stream jetstream.Stream) error {
	// The consumer first: a message the stream still holds that the consumer is done
	// with was given up on, not acked (acked messages leave a work-queue stream).
	var v StreamView
	if cons, err := stream.Consumer(ctx, n.names.MaskConsumer()); err == nil {
		if ci, err := cons.Info(ctx); err == nil {
			v.AckFloor, v.Delivered, v.AckPending = ci.AckFloor.Stream, ci.Delivered.Stream, ci.NumAckPending
		} else {
			n.log.Debug("mask consumer info", "err", err)
		}
	} else {
		n.log.Debug("mask consumer", "err", err)
	}
	info, err := stream.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	v.FirstSeq, v.LastSeq, v.Deleted = info.State.FirstSeq, info.State.LastSeq, map[uint64]bool{}
	for _, d := range info.State.Deleted {
		v.Deleted[d] = true
	}
	var p Plan
	var fails []Command
	n.fsm.View(func(s *State) {
		p = Reconcile(s, v)
		var ids []string
		ids, n.gaveUp = Confirm(n.gaveUp, p.GaveUp)
		for _, id := range ids {
			fails = append(fails, GaveUpFail(s, id))
		}
	})
	if len(fails) > 0 {
		n.log.Warn("failing tasks JetStream gave up on (max deliveries reached, advisory missed)", "n", len(fails))
		cmd := fails[0]
		if len(fails) > 1 {
			cmd = Command{Kind: CmdBatch, Batch: fails}
		}
		if _, err := n.Propose(ctx, cmd); err != nil {
			return fmt.Errorf("fail tasks JetStream gave up on: %w", err)
		}
	}
	for _, seq := range p.Remove {
		if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			n.log.Debug("remove message of final task", "seq", seq, "err", err)
		}
	}
	if len(p.Republish) > 0 {
		n.log.Info("republishing tasks missing from the queue", "n", len(p.Republish))
		if err := n.publish(ctx, p.Republish); err != nil {
			return err
		}
	}
	return n.publishNew(ctx)
}

// expire returns expired leases to pending (or fails them on their last attempt).
func (n *Node) expire(ctx context.Context) {
	var ids []string
	now := n.opts.Now().UnixNano()
	n.fsm.View(func(s *State) { ids = ExpiredLeases(s, now, 3*n.opts.Heartbeat) })
	if len(ids) > 0 {
		n.Propose(ctx, Command{Kind: CmdExpire, Expire: ids})
	}
}
