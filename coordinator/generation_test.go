package coordinator

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

func ranks(workers ...string) []natsutil.RankInfo {
	var rs []natsutil.RankInfo
	for i, w := range workers {
		rs = append(rs, natsutil.RankInfo{Worker: w, Addr: fmt.Sprintf("127.0.0.1:%d", 9000+i), Stage: natsutil.TrainStageDiffusion, Step: 100})
	}
	return rs
}

func genCommit(number int, at int64, workers ...string) Command {
	return Command{Kind: CmdGenCommit, At: at, GenCommit: &GenerationCommit{Number: number, Ranks: ranks(workers...),
		Stage: natsutil.TrainStageDiffusion, StartStep: 100, EndStep: 200, Secret: strings.Repeat("ab", 32)}}
}

func genEnd(number int, at int64, reason string, last int64, lost ...string) Command {
	return Command{Kind: CmdGenEnd, At: at, GenEnd: &GenerationEnd{Number: number, Reason: reason, LastStep: last, Lost: lost}}
}

func genFirst(number int, at, rankAt int64) Command {
	return Command{Kind: CmdGenFirstStep, At: at, GenFirstStep: &GenerationFirstStep{Number: number, At: rankAt}}
}

// Every training command, in order, with the outcome the fencing rules give it.
func TestGenerationFencing(t *testing.T) {
	bad := func(mut func(c *GenerationCommit)) Command {
		c := genCommit(2, 30*sec, "a", "b")
		mut(c.GenCommit)
		return c
	}
	steps := []struct {
		name string
		cmd  Command
		want Outcome
		err  string
	}{
		{"first step of no generation", genFirst(1, 1*sec, 1*sec), Rejected, "no generation 1"},
		{"end of no generation", genEnd(1, 1*sec, "boundary", 0), Rejected, "no generation 1"},
		{"commit 2 first", genCommit(2, 1*sec, "a"), Rejected, "next generation is 1"},
		{"commit 1", genCommit(1, 10*sec, "a", "b", "c"), OK, ""},
		{"commit 2 while 1 runs", genCommit(2, 11*sec, "a", "b"), Rejected, "still active"},
		{"first step of 1", genFirst(1, 13*sec, 12*sec), OK, ""},
		{"first step of 1 again", genFirst(1, 14*sec, 13*sec), Duplicate, ""},
		{"end 2 (not committed)", genEnd(2, 15*sec, "boundary", 0), Rejected, "no generation 2"},
		{"end 1", genEnd(1, 20*sec, "rank 2 (c) silent for 15.0s", 150, "c"), OK, ""},
		{"end 1 again (stale)", genEnd(1, 21*sec, "boundary", 160), Stale, "already ended"},
		{"commit 1 again", genCommit(1, 22*sec, "a"), Rejected, "next generation is 2"},
		{"commit 3", genCommit(3, 22*sec, "a"), Rejected, "next generation is 2"},
		{"commit without ranks", bad(func(c *GenerationCommit) { c.Ranks = nil }), Rejected, "without ranks"},
		{"commit with a worker twice", bad(func(c *GenerationCommit) { c.Ranks = ranks("a", "a") }), Rejected, "two ranks"},
		{"commit without an address", bad(func(c *GenerationCommit) { c.Ranks[1].Addr = "" }), Rejected, "address"},
		{"commit with the source outside", bad(func(c *GenerationCommit) { c.Source = 2 }), Rejected, "source rank 2"},
		{"commit without a secret", bad(func(c *GenerationCommit) { c.Secret = "" }), Rejected, "secret"},
		{"commit 2", bad(func(c *GenerationCommit) { c.Lost = []string{"c"} }), OK, ""},
		{"first step of 2 before its commit time (rank clock behind)", genFirst(2, 32*sec, 25*sec), OK, ""},
		{"end 1 once 2 runs (stale)", genEnd(1, 33*sec, "boundary", 0), Stale, ""},
	}
	var cmds []Command
	for _, st := range steps {
		cmds = append(cmds, st.cmd)
	}
	s, res := run(t, cmds)
	for i, st := range steps {
		if res[i].Outcome != st.want || !strings.Contains(res[i].Err, st.err) {
			t.Errorf("%s: %+v, want %s with %q", st.name, res[i], st.want, st.err)
		}
	}
	if len(s.Generations) != 2 {
		t.Fatalf("%d generations, want 2", len(s.Generations))
	}
	g1, g2 := s.Generations[0], s.Generations[1]
	if !g1.Ended || g1.EndedAt != 20*sec || g1.LastStep != 150 || fmt.Sprint(g1.Silent) != "[c]" || !strings.Contains(g1.EndReason, "silent") {
		t.Errorf("generation 1 = %+v: want ended at 20s at step 150, c silent", g1)
	}
	if g1.FirstStepAt != 12*sec || g1.RecoveryNanos != 0 {
		t.Errorf("generation 1 first step %d recovery %d: want 12s and none (no previous generation)", g1.FirstStepAt, g1.RecoveryNanos)
	}
	if fmt.Sprint(g1.Ranks) != "[a b c]" || g1.Source != 0 || g1.EndStep != 200 || g1.CreatedAt != 10*sec {
		t.Errorf("generation 1 = %+v", g1)
	}
	// The rank's time before the commit is clamped to the commit: recovery 30s - 20s.
	if g2.Ended || g2.FirstStepAt != 30*sec || g2.RecoveryNanos != 10*sec || fmt.Sprint(g2.Lost) != "[c]" {
		t.Errorf("generation 2 = %+v: want active, first step at 30s, recovery 10s, c lost", g2)
	}
	if a := s.ActiveGeneration(); a == nil || a.Number != 2 {
		t.Errorf("active generation %v, want 2", a)
	}
	if info := g2.Info(); info.Number != 2 || len(info.Ranks) != 2 || info.Secret != g2.Secret || info.StartStep != 100 {
		t.Errorf("info %+v", info)
	}
}

// A rank's first-step time after the command's own time is clamped to it.
func TestFirstStepClampedToLeaderTime(t *testing.T) {
	s, res := run(t, []Command{genCommit(1, 10*sec, "a"), genEnd(1, 20*sec, "boundary", 200), genCommit(2, 21*sec, "a"), genFirst(2, 25*sec, 90*sec)})
	if res[3].Outcome != OK || s.Generations[1].FirstStepAt != 25*sec || s.Generations[1].RecoveryNanos != 5*sec {
		t.Errorf("%+v %+v: want first step at 25s, recovery 5s", res[3], s.Generations[1])
	}
}

// Generations survive a snapshot and restore, and the restored FSM fences like the
// original.
func TestGenerationSnapshotRoundTrip(t *testing.T) {
	cmds := append(script(), genCommit(1, 50*sec, "a", "b"), genFirst(1, 52*sec, 51*sec),
		genEnd(1, 60*sec, "boundary", 200), genCommit(2, 61*sec, "b", "a"))
	f := NewFSM()
	for i, c := range cmds {
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
	g.View(func(s *State) {
		if len(s.Generations) != 2 || s.Generations[0].RankInfo[1].Addr != "127.0.0.1:9001" || s.Generations[1].Ranks[0] != "b" {
			t.Errorf("restored generations %+v", s.Generations)
		}
	})
	for _, fsm := range []*FSM{f, g} {
		for i, c := range []Command{genCommit(3, 70*sec, "a"), genEnd(2, 71*sec, "boundary", 300), genCommit(3, 72*sec, "a")} {
			data, _ := c.Encode()
			r := fsm.Apply(&raft.Log{Index: uint64(200 + i), Type: raft.LogCommand, Data: data}).(Result)
			if want := []Outcome{Rejected, OK, OK}[i]; r.Outcome != want {
				t.Errorf("after restore, command %d: %s, want %s", i, r.Outcome, want)
			}
		}
	}
	f.View(func(s *State) { before, _ = EncodeState(s) })
	g.View(func(s *State) { after, _ = EncodeState(s) })
	if !bytes.Equal(before, after) {
		t.Fatalf("restored FSM diverged")
	}
}

// Clone copies generations deeply.
func TestCloneGenerations(t *testing.T) {
	s, _ := run(t, []Command{genCommit(1, 10*sec, "a", "b")})
	c := s.Clone()
	c.Generations[0].Ranks[0] = "x"
	c.Generations[0].RankInfo[0].Addr = "x"
	if s.Generations[0].Ranks[0] != "a" || s.Generations[0].RankInfo[0].Addr == "x" {
		t.Errorf("clone shares generation slices")
	}
}

func TestNewSecret(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSecret()
	if len(a) != 64 || a == b {
		t.Errorf("secrets %q %q: want 64 hex digits, different", a, b)
	}
}
