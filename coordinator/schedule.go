package coordinator

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// The leader's scheduling decisions, as plain functions of the state and what it has
// observed; Node turns them into NATS calls and raft commands.

// ToPublish returns the non-final tasks whose message has never been stored in the
// stream (Seq 0), in id order, at most limit (0 = all).
func ToPublish(s *State, limit int) []string {
	var ids []string
	for id, t := range s.Tasks {
		if !t.State.Final() && t.Seq == 0 {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	if limit > 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	return ids
}

// ExpiredLeases returns the leased tasks whose lease ended at or before now (unix ns)
// and whose worker has not been heard from within aliveWithin (a worker that still
// heartbeats is still working on a long image; JetStream redelivers the task if its
// progress acks stop).
func ExpiredLeases(s *State, now int64, aliveWithin time.Duration) []string {
	var ids []string
	for id, t := range s.Tasks {
		if t.State != TaskLeased || t.LeaseUntil > now {
			continue
		}
		if w, ok := s.Workers[t.Worker]; ok && now-w.LastSeen <= int64(aliveWithin) {
			continue
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// StreamView is what the leader saw of the task stream (which sequences it still
// holds) and of the mask consumer.
type StreamView struct {
	FirstSeq, LastSeq uint64
	// Deleted are interior sequences no longer in the stream.
	Deleted map[uint64]bool
	// What the mask consumer reported, read before the stream's sequences (zero:
	// unknown). AckFloor is its ack floor (stream sequence): it is done with every
	// message at or below it, acked, terminated or given up on after MaxDeliver
	// deliveries. Delivered is the last stream sequence it delivered and AckPending how
	// many delivered messages await an ack or a redelivery: with none pending, every
	// delivered message the stream still holds was given up on.
	AckFloor, Delivered uint64
	AckPending          int
}

// GaveUpOn reports whether the consumer will never deliver the held message seq again.
func (v StreamView) GaveUpOn(seq uint64) bool {
	return seq != 0 && (seq <= v.AckFloor || (seq <= v.Delivered && v.AckPending == 0))
}

// Holds reports whether the stream still holds message seq. The leader publishes and
// reconciles from one goroutine, so no recorded sequence is newer than the view; one
// past LastSeq means the stream was reset and lost it.
func (v StreamView) Holds(seq uint64) bool {
	return seq >= v.FirstSeq && seq <= v.LastSeq && seq != 0 && !v.Deleted[seq]
}

// Plan is what reconciling the queue with the ledger must do.
type Plan struct {
	// Republish lists non-final tasks whose message is missing from the stream.
	Republish []string
	// Remove lists stream sequences of tasks that are already final.
	Remove []uint64
	// GaveUp lists non-final tasks whose message the stream still holds but the
	// consumer will never deliver again (StreamView.GaveUpOn): JetStream gave up on it
	// after MaxDeliver deliveries (workers ack or terminate a message only after its
	// task is final, or when terminating remove it; a nak keeps it pending). The leader fails them once two
	// reconciles in a row agree (see Confirm), in case its max-deliveries advisory was
	// missed, e.g. while leadership changed.
	GaveUp []string
}

// Reconcile compares the ledger (the truth) with the stream. The view must be taken
// before the state is read: a task that is not final in the state was not final when
// the view was taken (tasks never leave a final state for a non-final one), and a
// worker removes a message only after its task is final, so a missing message was lost.
func Reconcile(s *State, v StreamView) Plan {
	var p Plan
	for id, t := range s.Tasks {
		switch {
		case t.State.Final():
			if v.Holds(t.Seq) {
				p.Remove = append(p.Remove, t.Seq)
			}
		case t.Seq != 0 && !v.Holds(t.Seq):
			p.Republish = append(p.Republish, id)
		case v.GaveUpOn(t.Seq):
			p.GaveUp = append(p.GaveUp, id)
		}
	}
	sort.Strings(p.Republish)
	sort.Strings(p.GaveUp)
	sort.Slice(p.Remove, func(i, j int) bool { return p.Remove[i] < p.Remove[j] })
	return p
}

// ProposedHeartbeat is a heartbeat the leader proposed at At (unix ns).
type ProposedHeartbeat struct {
	Heartbeat
	At int64
}

// HeartbeatDue reports whether a worker's heartbeat must be committed through raft:
// the registry lacks the worker (w nil) or has other roles or host for it, or its
// committed liveness is at least every old. last is the leader's latest proposal for
// the worker (nil: none); while it carries the same roles and host and is younger
// than every, it covers this heartbeat too. Other heartbeats change nothing worth a
// raft command.
func HeartbeatDue(w *WorkerInfo, last *ProposedHeartbeat, hb Heartbeat, now int64, every time.Duration) bool {
	same := func(roles []string, host string) bool { return host == hb.Host && slices.Equal(roles, hb.Roles) }
	var covered int64
	if last != nil && same(last.Roles, last.Host) {
		covered = last.At
	}
	if w == nil || !same(w.Roles, w.Host) {
		return covered == 0 || now-covered >= int64(every)
	}
	return now-max(w.LastSeen, covered) >= int64(every)
}

// Confirm returns the ids of now that prev also holds (seen on two reconciles in a
// row), and now as a set to pass as prev next time.
func Confirm(prev map[string]bool, now []string) (confirmed []string, next map[string]bool) {
	next = make(map[string]bool, len(now))
	for _, id := range now {
		next[id] = true
		if prev[id] {
			confirmed = append(confirmed, id)
		}
	}
	return confirmed, next
}

// GaveUpFail is the command failing a task JetStream gave up on (see Plan.GaveUp).
func GaveUpFail(s *State, id string) Command {
	maxDeliver := 1
	if s.Job != nil {
		maxDeliver = s.Job.MaxDeliver
	}
	attempts := maxDeliver
	if t, ok := s.Tasks[id]; ok {
		attempts = max(attempts, t.Attempts)
	}
	reason := fmt.Sprintf("delivered %d times without a result: the worker holding it was lost or timed out every time (cluster.worker.ack_wait); found by reconciling the ledger with the work queue", maxDeliver)
	if t, ok := s.Tasks[id]; ok {
		reason += lastReason(t.Reason)
	}
	return Command{Kind: CmdFail, Fail: &Fail{TaskID: id, Attempt: attempts, Reason: reason, Final: true}}
}

// BuildStatus summarises the state for `samdiffsr status`. aliveWithin is how recent a
// worker's last heartbeat must be for it to count as alive.
func BuildStatus(s *State, now time.Time, aliveWithin time.Duration) natsutil.Status {
	st := natsutil.Status{Time: now}
	if s.Job != nil {
		st.Job, st.Config = s.Job.Name, s.Job.ConfigHash
	}
	st.Index = s.Index
	m := &st.Masks
	m.Total = len(s.Tasks)
	m.Pending, m.Leased = s.Counts[TaskPending], s.Counts[TaskLeased]
	m.Done, m.Failed = s.Counts[TaskDone], s.Counts[TaskFailed]
	m.Duplicates = s.Duplicates
	if s.Job != nil && m.Done > 0 {
		var first, last int64
		for _, t := range s.Tasks {
			if t.State == TaskDone {
				if first == 0 || t.DoneAt < first {
					first = t.DoneAt
				}
				last = max(last, t.DoneAt)
			}
		}
		start := min(s.Job.SubmittedAt, first)
		if last > start {
			m.Rate = float64(m.Done) / (float64(last-start) / 1e9)
		}
		if left := m.Total - m.Done - m.Failed; left > 0 && m.Rate > 0 {
			m.ETA = (time.Duration(float64(left) / m.Rate * float64(time.Second))).Round(time.Second).String()
		}
	}
	ids := make([]string, 0, len(s.Workers))
	for id := range s.Workers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		w := s.Workers[id]
		ws := natsutil.WorkerStatus{ID: id, Roles: w.Roles, Done: w.Done, Failed: w.Failed,
			Alive: now.UnixNano()-w.LastSeen <= int64(aliveWithin), LastSeen: time.Unix(0, w.LastSeen).UTC().Format(time.RFC3339)}
		if d := w.LastSeen - w.FirstSeen; d > 0 {
			ws.Rate = float64(w.Done) / (float64(d) / 1e9)
		}
		st.Workers = append(st.Workers, ws)
	}
	if s.Counts[TaskFailed] > 0 {
		for id, t := range s.Tasks {
			if t.State == TaskFailed {
				st.Failures = append(st.Failures, natsutil.FailureStatus{ID: id, Attempts: t.Attempts, Reason: t.Reason})
			}
		}
		sort.Slice(st.Failures, func(i, j int) bool { return st.Failures[i].ID < st.Failures[j].ID })
	}
	return st
}

// LedgerSlice returns a page of the ledger in id order after req.After.
func LedgerSlice(s *State, req natsutil.LedgerRequest) natsutil.LedgerPage {
	limit := req.Limit
	if limit <= 0 || limit > 2000 {
		limit = 2000
	}
	var page natsutil.LedgerPage
	for _, id := range s.TaskIDs() {
		if strings.Compare(id, req.After) <= 0 && req.After != "" {
			continue
		}
		t := s.Tasks[id]
		if req.State != "" && string(t.State) != req.State {
			continue
		}
		if len(page.Tasks) == limit {
			page.More = true
			break
		}
		page.Tasks = append(page.Tasks, natsutil.LedgerEntry{ID: id, State: string(t.State), Worker: t.Worker,
			Attempts: t.Attempts, Key: t.ResultKey, Digest: t.Digest, Regions: t.Regions, Reason: t.Reason,
			DoneIndex: t.DoneIndex, Duplicates: t.Duplicates})
	}
	return page
}
