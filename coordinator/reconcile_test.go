package coordinator

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A task can stay unfinished only while the queue can still deliver it. Each row is a
// ledger (built by commands) and what the leader saw of the stream and consumer; the
// plan must republish lost messages, fail the tasks JetStream gave up on (whatever the
// ledger says of their lease: it may have lost the lease record) and leave alone the
// ones still in play.
func TestReconcileGaveUp(t *testing.T) {
	base := func(extra ...Command) []Command {
		return append([]Command{job(3), images(4),
			{Kind: CmdPublished, At: 2 * sec, Published: []Publish{{"set/img000", 1, 1}, {"set/img001", 2, 1}, {"set/img002", 3, 1}, {"set/img003", 4, 1}}},
		}, extra...)
	}
	tests := []struct {
		name          string
		cmds          []Command
		view          StreamView
		gaveUp, repub string
		remove        string
	}{
		{"all queued, none delivered", base(), StreamView{FirstSeq: 1, LastSeq: 4}, "[]", "[]", "[]"},
		{"delivered, awaiting redelivery (above the floor)", base(lease("set/img000", "w1", 1, 3*sec)),
			StreamView{FirstSeq: 1, LastSeq: 4, Delivered: 1, AckPending: 1}, "[]", "[]", "[]"},
		{"delivered, none awaiting an ack or redelivery: given up", base(lease("set/img000", "w1", 1, 3*sec)),
			StreamView{FirstSeq: 1, LastSeq: 4, Delivered: 2, AckPending: 0}, "[set/img000 set/img001]", "[]", "[]"},
		{"delivered, some pending: only the floor decides", base(),
			StreamView{FirstSeq: 1, LastSeq: 4, Delivered: 3, AckPending: 1, AckFloor: 1}, "[set/img000]", "[]", "[]"},
		{"lease record lost, message given up", base(),
			StreamView{FirstSeq: 1, LastSeq: 4, AckFloor: 1}, "[set/img000]", "[]", "[]"},
		{"leased in the ledger, message given up", base(lease("set/img000", "w1", 3, 3*sec), lease("set/img001", "w1", 1, 3*sec)),
			StreamView{FirstSeq: 1, LastSeq: 4, AckFloor: 2}, "[set/img000 set/img001]", "[]", "[]"},
		{"done task below the floor is removed, not failed", base(done("set/img000", "w1", 1, "sha000", 4*sec)),
			StreamView{FirstSeq: 1, LastSeq: 4, AckFloor: 1}, "[]", "[]", "[1]"},
		{"message gone (terminated or lost) is republished, not failed", base(lease("set/img001", "w1", 1, 3*sec)),
			StreamView{FirstSeq: 1, LastSeq: 4, Deleted: map[uint64]bool{2: true}, AckFloor: 2}, "[set/img000]", "[set/img001]", "[]"},
		{"floor unknown", base(), StreamView{FirstSeq: 1, LastSeq: 4}, "[]", "[]", "[]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := run(t, tc.cmds)
			p := Reconcile(s, tc.view)
			if got := fmt.Sprint(p.GaveUp); got != tc.gaveUp {
				t.Errorf("gave up %v, want %s", p.GaveUp, tc.gaveUp)
			}
			if got := fmt.Sprint(p.Republish); got != tc.repub {
				t.Errorf("republish %v, want %s", p.Republish, tc.repub)
			}
			if got := fmt.Sprint(p.Remove); got != tc.remove {
				t.Errorf("remove %v, want %s", p.Remove, tc.remove)
			}
		})
	}
}

// The leader fails a given-up task only when two reconciles in a row agree, and the
// failure is final with its reason: the task leaves pending for good.
func TestConfirmAndGaveUpFail(t *testing.T) {
	got, next := Confirm(nil, []string{"a", "b"})
	if len(got) != 0 {
		t.Errorf("confirmed on first sight: %v", got)
	}
	got, next = Confirm(next, []string{"b", "c"})
	if fmt.Sprint(got) != "[b]" {
		t.Errorf("confirmed %v, want [b]", got)
	}
	if got, _ = Confirm(next, nil); len(got) != 0 {
		t.Errorf("confirmed %v after the condition cleared", got)
	}

	s, _ := run(t, []Command{job(3), images(1),
		{Kind: CmdPublished, At: 2 * sec, Published: []Publish{{"set/img000", 1, 1}}},
		lease("set/img000", "w1", 1, 3*sec)})
	cmd := GaveUpFail(s, "set/img000")
	cmd.At = 10 * sec
	if r := s.Apply(20, cmd); r.Outcome != OK || r.State != TaskFailed {
		t.Fatalf("fail: %+v", r)
	}
	tk := s.Tasks["set/img000"]
	if tk.State != TaskFailed || tk.Attempts != 3 || !strings.Contains(tk.Reason, "delivered 3 times") {
		t.Errorf("task %+v: want failed after 3 attempts with the reason", tk)
	}
	if p := Reconcile(s, StreamView{FirstSeq: 1, LastSeq: 1, AckFloor: 1}); len(p.GaveUp) != 0 || fmt.Sprint(p.Remove) != "[1]" {
		t.Errorf("after failing: plan %+v, want its message removed", p)
	}
}

func TestHeartbeatDue(t *testing.T) {
	const every = 3 * time.Second
	known := &WorkerInfo{ID: "w1", Roles: []string{"mask"}, Host: "h1", LastSeen: 10 * sec}
	hb := Heartbeat{Worker: "w1", Roles: []string{"mask"}, Host: "h1"}
	moved := Heartbeat{Worker: "w1", Roles: []string{"mask"}, Host: "h2"}
	at := func(h Heartbeat, t int64) *ProposedHeartbeat { return &ProposedHeartbeat{Heartbeat: h, At: t} }
	tests := []struct {
		name string
		w    *WorkerInfo
		last *ProposedHeartbeat
		hb   Heartbeat
		now  int64
		want bool
	}{
		{"new worker", nil, nil, hb, 10 * sec, true},
		{"new worker, proposal in flight", nil, at(hb, 10*sec), hb, 11 * sec, false},
		{"new worker, proposal lost long ago", nil, at(hb, 10*sec), hb, 14 * sec, true},
		{"registered, fresh", known, nil, hb, 11 * sec, false},
		{"registered, just under the interval", known, nil, hb, 13*sec - 1, false},
		{"registered, liveness getting old", known, nil, hb, 13 * sec, true},
		{"registered, old, but a proposal in flight", known, at(hb, 12*sec), hb, 13 * sec, false},
		{"host changed", known, nil, moved, 11 * sec, true},
		{"host changed right after a proposal of the old host", known, at(hb, 11*sec), moved, 11 * sec, true},
		{"host change in flight", known, at(moved, 11*sec), moved, 12 * sec, false},
		{"roles changed", known, nil, Heartbeat{Worker: "w1", Roles: []string{"mask", "train"}, Host: "h1"}, 11 * sec, true},
	}
	for _, tc := range tests {
		if got := HeartbeatDue(tc.w, tc.last, tc.hb, tc.now, every); got != tc.want {
			t.Errorf("%s: due = %v, want %v", tc.name, got, tc.want)
		}
	}
}
