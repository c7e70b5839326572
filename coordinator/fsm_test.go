package coordinator

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

const sec = int64(time.Second)

func job(maxDeliver int) Command {
	return Command{Kind: CmdSetJob, At: 1 * sec, SetJob: &JobSpec{Name: "j", ConfigHash: "h1", MaxDeliver: maxDeliver, LeaseTTLNanos: 10 * sec}}
}

func images(n int) Command {
	c := Command{Kind: CmdAddImages, At: 1 * sec}
	for i := range n {
		c.Images = append(c.Images, Image{ID: fmt.Sprintf("set/img%03d", i), Path: fmt.Sprintf("/d/img%03d.png", i), Size: 10, SHA256: fmt.Sprintf("sha%03d", i)})
	}
	return c
}

func lease(id, w string, attempt int, at int64) Command {
	return Command{Kind: CmdLease, At: at, Lease: &Lease{TaskID: id, Worker: w, Attempt: attempt}}
}

func done(id, w string, attempt int, sha string, at int64) Command {
	return Command{Kind: CmdDone, At: at, Done: &Done{TaskID: id, Worker: w, Attempt: attempt, ImageSHA256: sha, ResultKey: sha, Digest: "d-" + sha, Regions: 3}}
}

func fail(id, w string, attempt int, reason string, at int64) Command {
	return Command{Kind: CmdFail, At: at, Fail: &Fail{TaskID: id, Worker: w, Attempt: attempt, Reason: reason}}
}

// script is a run of commands covering every kind and every task outcome.
func script() []Command {
	return []Command{
		job(3),
		images(5),
		{Kind: CmdPublished, At: 2 * sec, Published: []Publish{{"set/img000", 1, 1}, {"set/img001", 2, 1}, {"set/img002", 3, 1}, {"set/img003", 4, 1}, {"set/img004", 5, 1}}},
		{Kind: CmdHeartbeat, At: 2 * sec, Heartbeat: &Heartbeat{Worker: "w1", Roles: []string{"mask"}}},
		{Kind: CmdBatch, At: 3 * sec, Batch: []Command{lease("set/img000", "w1", 1, 0), lease("set/img001", "w2", 1, 0), lease("set/img002", "w1", 1, 0)}},
		done("set/img000", "w1", 1, "sha000", 4*sec),
		done("set/img000", "w2", 2, "sha000", 5*sec), // duplicate
		fail("set/img002", "w1", 1, "decode: bad png", 5*sec),
		lease("set/img002", "w2", 2, 6*sec),
		fail("set/img002", "w2", 2, "decode: bad png", 6*sec),
		lease("set/img002", "w1", 3, 7*sec),
		fail("set/img002", "w1", 3, "decode: bad png", 7*sec),
		{Kind: CmdExpire, At: 20 * sec, Expire: []string{"set/img001"}},
		{Kind: CmdMember, At: 20 * sec, Member: &Member{ID: "c2", Addr: "127.0.0.1:7401"}},
		lease("set/img003", "w1", 3, 21*sec),
		{Kind: CmdExpire, At: 40 * sec, Expire: []string{"set/img003"}},
	}
}

func run(t *testing.T, cmds []Command) (*State, []Result) {
	t.Helper()
	s := NewState()
	var res []Result
	for i, c := range cmds {
		// Through the log encoding, as raft delivers them.
		data, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		dc, err := DecodeCommand(data)
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, s.Apply(uint64(i+1), dc))
	}
	return s, res
}

func TestApplyLifecycle(t *testing.T) {
	s, res := run(t, script())
	want := map[string]TaskState{
		"set/img000": TaskDone, "set/img001": TaskPending, "set/img002": TaskFailed,
		"set/img003": TaskFailed, "set/img004": TaskPending,
	}
	for id, st := range want {
		if got := s.Tasks[id].State; got != st {
			t.Errorf("%s: state %s, want %s", id, got, st)
		}
	}
	if res[6].Outcome != Duplicate {
		t.Errorf("second done: outcome %s, want duplicate", res[6].Outcome)
	}
	if s.Tasks["set/img000"].Worker != "w1" || s.Tasks["set/img000"].DoneIndex != 6 || s.Tasks["set/img000"].Duplicates != 1 {
		t.Errorf("img000 = %+v: want done by w1 at index 6 with 1 duplicate", s.Tasks["set/img000"])
	}
	if r := s.Tasks["set/img002"].Reason; !strings.Contains(r, "3 of 3") || !strings.Contains(r, "bad png") {
		t.Errorf("img002 reason %q: want attempts and cause", r)
	}
	if r := s.Tasks["set/img003"].Reason; !strings.Contains(r, "expired") {
		t.Errorf("img003 reason %q: want lease expiry", r)
	}
	if got := s.Counts; got[TaskDone] != 1 || got[TaskFailed] != 2 || got[TaskPending] != 2 || got[TaskLeased] != 0 {
		t.Errorf("counts %v", got)
	}
	if s.Workers["w1"].Done != 1 || s.Workers["w2"].Done != 0 || s.Workers["w1"].Failed != 2 {
		t.Errorf("workers %+v %+v", s.Workers["w1"], s.Workers["w2"])
	}
	if _, ok := s.Voters["c2"]; !ok {
		t.Errorf("voter c2 not recorded")
	}
	if tk, ok := s.TaskBySeq(2); !ok || tk.ID != "set/img001" {
		t.Errorf("TaskBySeq(2) = %v, %v", tk, ok)
	}
	// A lease of a final task tells the worker to skip it.
	if r := s.Apply(100, lease("set/img000", "w3", 3, 50*sec)); r.Outcome != Skip {
		t.Errorf("lease of done task: %s, want skip", r.Outcome)
	}
}

func TestApplyRejects(t *testing.T) {
	s := NewState()
	if r := s.Apply(1, images(1)); r.Outcome != Rejected {
		t.Errorf("images before job: %s", r.Outcome)
	}
	s.Apply(2, job(2))
	other := job(2)
	other.SetJob.ConfigHash = "h2"
	if r := s.Apply(3, other); r.Outcome != Rejected || !strings.Contains(r.Err, "config hash") {
		t.Errorf("other config: %+v", r)
	}
	if r := s.Apply(4, job(5)); r.Outcome != OK || s.Job.MaxDeliver != 5 {
		t.Errorf("same config, new max_deliver: %+v, %d", r, s.Job.MaxDeliver)
	}
	if r := s.Apply(5, lease("nope", "w", 1, 0)); r.Outcome != Rejected {
		t.Errorf("unknown task: %s", r.Outcome)
	}
	s.Apply(6, images(2))
	if r := s.Apply(7, images(3)); r.Added != 1 {
		t.Errorf("re-adding: added %d, want 1", r.Added)
	}
	if r := s.Apply(8, done("set/img000", "w", 1, "other", 0)); r.Outcome != Rejected || s.Tasks["set/img000"].State != TaskFailed {
		t.Errorf("changed image: %+v state %s", r, s.Tasks["set/img000"].State)
	}
	if r := s.Apply(9, Command{Kind: "bogus"}); r.Outcome != Rejected {
		t.Errorf("bogus kind: %s", r.Outcome)
	}
}

func TestDeterministic(t *testing.T) {
	a, _ := run(t, script())
	b, _ := run(t, script())
	ea, _ := EncodeState(a)
	eb, _ := EncodeState(b)
	if !bytes.Equal(ea, eb) {
		t.Fatalf("same commands, different states")
	}
}

type sink struct {
	bytes.Buffer
	cancelled bool
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { s.cancelled = true; return nil }
func (s *sink) Close() error  { return nil }

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	f := NewFSM()
	for i, c := range script() {
		data, _ := c.Encode()
		f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data})
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sk sink
	if err := snap.Persist(&sk); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sk.Bytes()))); err != nil {
		t.Fatal(err)
	}
	var before, after []byte
	f.View(func(s *State) { before, _ = EncodeState(s) })
	g.View(func(s *State) { after, _ = EncodeState(s) })
	if !bytes.Equal(before, after) {
		t.Fatalf("restored state differs:\n%s\n%s", before, after)
	}
	// Derived indexes are rebuilt, and the restored FSM goes on exactly like the original.
	next := []Command{done("set/img001", "w2", 2, "sha001", 50*sec), lease("set/img004", "w1", 1, 51*sec), {Kind: CmdPublished, Published: []Publish{{"set/img004", 9, 2}}}}
	for i, c := range next {
		data, _ := c.Encode()
		l := &raft.Log{Index: uint64(100 + i), Type: raft.LogCommand, Data: data}
		f.Apply(l)
		g.Apply(l)
	}
	f.View(func(s *State) { before, _ = EncodeState(s) })
	g.View(func(s *State) {
		after, _ = EncodeState(s)
		if tk, ok := s.TaskBySeq(9); !ok || tk.ID != "set/img004" {
			t.Errorf("seq index after restore: %v %v", tk, ok)
		}
		if s.Counts[TaskDone] != 2 {
			t.Errorf("counts after restore: %v", s.Counts)
		}
	})
	if !bytes.Equal(before, after) {
		t.Fatalf("restored FSM diverged after more commands")
	}
	if err := g.Restore(io.NopCloser(strings.NewReader("{not json"))); err == nil {
		t.Errorf("corrupt snapshot restored without error")
	}
}

func TestReconcile(t *testing.T) {
	s, _ := run(t, script())
	// Stream holds 1..5 except 3 (img002 failed and was terminated) and 2 (lost).
	v := StreamView{FirstSeq: 1, LastSeq: 5, Deleted: map[uint64]bool{2: true, 3: true}}
	p := Reconcile(s, v)
	if fmt.Sprint(p.Republish) != "[set/img001]" {
		t.Errorf("republish %v, want [set/img001]", p.Republish)
	}
	// img000 done (seq 1 still there), img003 failed (seq 4 still there).
	if fmt.Sprint(p.Remove) != "[1 4]" {
		t.Errorf("remove %v, want [1 4]", p.Remove)
	}
	if got := ToPublish(s, 0); len(got) != 0 {
		t.Errorf("ToPublish = %v, want none", got)
	}
	s.Apply(50, images(7))
	if got := ToPublish(s, 1); fmt.Sprint(got) != "[set/img005]" {
		t.Errorf("ToPublish(1) = %v", got)
	}
	s.Apply(51, lease("set/img004", "w1", 1, 60*sec))
	if got := ExpiredLeases(s, 69*sec, time.Second); len(got) != 0 {
		t.Errorf("expired early: %v", got)
	}
	// w1 was last seen at 60s: alive at 70.5s with a 20s window, dead with a 5s one.
	if got := ExpiredLeases(s, 70*sec+sec/2, 20*time.Second); len(got) != 0 {
		t.Errorf("lease of a live worker expired: %v", got)
	}
	if got := ExpiredLeases(s, 70*sec+sec/2, 5*time.Second); fmt.Sprint(got) != "[set/img004]" {
		t.Errorf("expired = %v", got)
	}
}

func TestStatusAndLedger(t *testing.T) {
	s, _ := run(t, script())
	st := BuildStatus(s, time.Unix(0, 22*sec), 2*time.Second)
	if st.Masks.Total != 5 || st.Masks.Done != 1 || st.Masks.Failed != 2 || st.Masks.Duplicates != 1 {
		t.Errorf("masks %+v", st.Masks)
	}
	if len(st.Failures) != 2 || st.Failures[0].ID != "set/img002" {
		t.Errorf("failures %+v", st.Failures)
	}
	alive := map[string]bool{}
	for _, w := range st.Workers {
		alive[w.ID] = w.Alive
	}
	if !alive["w1"] || alive["w2"] || len(st.Workers) != 2 {
		t.Errorf("workers %+v: want w1 (seen 1s ago) alive, w2 (16s ago) not", st.Workers)
	}
	p1 := LedgerSlice(s, natsLedger("", 2))
	if len(p1.Tasks) != 2 || !p1.More {
		t.Fatalf("page 1 %+v", p1)
	}
	p2 := LedgerSlice(s, natsLedgerAfter(p1.Tasks[1].ID, 10))
	if len(p2.Tasks) != 3 || p2.More || p2.Tasks[0].ID != "set/img002" {
		t.Errorf("page 2 %+v", p2)
	}
	if d := LedgerSlice(s, natsLedger("done", 0)); len(d.Tasks) != 1 || d.Tasks[0].Key != "sha000" {
		t.Errorf("done page %+v", d)
	}
}

func natsLedger(state string, limit int) natsutil.LedgerRequest {
	return natsutil.LedgerRequest{State: state, Limit: limit}
}

func natsLedgerAfter(after string, limit int) natsutil.LedgerRequest {
	return natsutil.LedgerRequest{After: after, Limit: limit}
}
