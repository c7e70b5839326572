package coordinator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

func at(s float64) time.Time { return time.Unix(0, int64(s*float64(time.Second))) }

func policy(mut ...func(*TrainPolicy)) TrainPolicy {
	p := TrainPolicy{ClusterTrain: configs.ClusterTrain{MinWorkers: 1, AdmitEvery: 100, RegroupGrace: 2 * time.Second, LostAfter: 5 * time.Second},
		Heartbeat: time.Second}
	for _, m := range mut {
		m(&p)
	}
	return p
}

// rdy is a TrainReady received at t (its run of reports began then too).
func rdy(w string, t float64, stage int, step int64, gen int, reason string) ReadyReport {
	return ReadyReport{TrainReady: natsutil.TrainReady{Worker: w, Addr: "h-" + w + ":1", Host: "h-" + w, Stage: stage, Step: step,
		Generation: gen, Reason: reason}, At: at(t), Since: at(t)}
}

// since sets when r's run of reports began.
func since(r ReadyReport, t float64) ReadyReport { r.Since = at(t); return r }

func prog(w string, t float64, gen, rank int, step int64, rate float64) ProgressReport {
	return ProgressReport{TrainProgress: natsutil.TrainProgress{Worker: w, Generation: gen, Rank: rank, Stage: natsutil.TrainStageDiffusion,
		Step: step, StepsPerS: rate, ComputeS: 0.1, WaitS: 0.01, Bytes: 1000}, At: at(t)}
}

func view(leaderSince float64, reports ...any) TrainView {
	v := TrainView{Ready: map[string]ReadyReport{}, Progress: map[string]ProgressReport{}, LeaderSince: at(leaderSince)}
	for _, r := range reports {
		switch r := r.(type) {
		case ReadyReport:
			v.Ready[r.Worker] = r
		case ProgressReport:
			v.Progress[r.Worker] = r
		}
	}
	return v
}

// gen1 is generation 1 of a, b, c committed at 10s (step 100 of the diffusion stage).
func gen1(extra ...Command) []Command {
	return append([]Command{genCommit(1, 10*sec, "a", "b", "c")}, extra...)
}

// gen1Ended is generation 1 of b, a, c (in that rank order), ended at 50s.
func gen1Ended() []Command {
	return []Command{genCommit(1, 10*sec, "b", "a", "c"), genEnd(1, 50*sec, "boundary", 200)}
}

func describe(a TrainAction) string {
	switch {
	case a.End != nil:
		return fmt.Sprintf("end %d at %d lost %v: %s", a.End.Number, a.End.LastStep, a.End.Lost, a.End.Reason)
	case a.Commit != nil:
		c := a.Commit
		var ws []string
		for _, r := range c.Ranks {
			ws = append(ws, r.Worker)
		}
		return fmt.Sprintf("commit %d %v stage %d start %d end %d source %d lost %v", c.Number, ws, c.Stage, c.StartStep, c.EndStep, c.Source, c.Lost)
	}
	return "nothing"
}

func TestDecideTrain(t *testing.T) {
	D := natsutil.TrainStageDiffusion
	R := natsutil.TrainStageRRDB
	tests := []struct {
		name string
		cmds []Command
		view TrainView
		now  float64
		p    TrainPolicy
		want string
	}{
		// An active generation ends when a member leaves it, or goes silent.
		{"member leaves at the boundary", gen1(), view(0, rdy("a", 20, D, 200, 1, "boundary"), prog("b", 19.5, 1, 1, 199, 5)), 20.1, policy(),
			"end 1 at 200 lost []: boundary"},
		{"member leaves with an error", gen1(), view(0, rdy("b", 20, D, 150, 1, "collective: peer reset"), prog("a", 19.5, 1, 0, 160, 5)), 20.1, policy(),
			"end 1 at 160 lost []: rank 1 (b): collective: peer reset"},
		{"the earliest leaver's reason wins", gen1(), view(0, rdy("b", 20, D, 150, 1, "collective: peer reset"), rdy("c", 19, D, 150, 1, "cuda: out of memory")), 20.1, policy(),
			"end 1 at 150 lost []: rank 2 (c): cuda: out of memory"},
		{"a report sent before joining does not end it", gen1(), view(0, rdy("a", 10.1, D, 100, 0, "")), 11, policy(), "nothing"},
		{"running members are fine", gen1(), view(0, prog("a", 19, 1, 0, 150, 5), prog("b", 19, 1, 1, 150, 5), prog("c", 19, 1, 2, 150, 5)), 20, policy(), "nothing"},
		{"a silent member ends it", gen1(), view(0, prog("a", 19, 1, 0, 150, 5), prog("b", 19, 1, 1, 150, 5), prog("c", 12, 1, 2, 110, 5)), 18, policy(),
			"end 1 at 150 lost [c]: rank 2 (c) silent for 6.0s"},
		{"progress of another generation is not a sign of life", gen1(), view(0, prog("a", 16, 1, 0, 150, 5), prog("b", 16, 1, 1, 150, 5), prog("c", 16, 0, 2, 150, 5)), 16, policy(),
			"end 1 at 150 lost [c]: rank 2 (c) silent for 6.0s"},
		{"a member that never reported is silent after LostAfter from the commit", gen1(), view(0, prog("a", 16, 1, 0, 150, 5), prog("b", 16, 1, 1, 150, 5)), 15, policy(),
			"end 1 at 150 lost [c]: rank 2 (c) silent for 5.0s"},
		{"a new leader waits LostAfter before judging silence", gen1(), view(13, prog("a", 17, 1, 0, 150, 5), prog("b", 17, 1, 1, 150, 5)), 17.5, policy(), "nothing"},
		{"ready non-members wait for the boundary", gen1(), view(0, rdy("d", 15, D, 0, 0, ""), prog("a", 15, 1, 0, 150, 5), prog("b", 15, 1, 1, 150, 5), prog("c", 15, 1, 2, 150, 5)), 15.5, policy(), "nothing"},

		// The first generation forms once the ready set settles.
		{"first: not settled yet", nil, view(0, rdy("a", 100, R, 0, 0, ""), rdy("b", 100, R, 0, 0, ""), rdy("c", 100.5, R, 0, 0, "")), 101, policy(), "nothing"},
		{"first: settled for the grace", nil, view(0, since(rdy("c", 101.9, R, 0, 0, ""), 100), since(rdy("b", 102, R, 0, 0, ""), 100.5), since(rdy("a", 102.4, R, 0, 0, ""), 100)), 102.5, policy(),
			"commit 1 [a b c] stage 0 start 0 end 100 source 0 lost []"},
		{"first: a newcomer restarts the grace", nil, view(0, rdy("a", 102, R, 0, 0, ""), ReadyReport{TrainReady: natsutil.TrainReady{Worker: "b", Addr: "x:1"}, At: at(102), Since: at(101)}), 102.5, policy(), "nothing"},
		{"first: a worker that dropped out restarts the grace", nil, view(0, ReadyReport{TrainReady: natsutil.TrainReady{Worker: "a", Addr: "x:1"}, At: at(102), Since: at(99)}, rdy("b", 98, R, 0, 0, "")), 102.5, policy(), "nothing"},
		{"first: max workers are there", nil, view(0, rdy("a", 100, R, 0, 0, ""), rdy("b", 100, R, 0, 0, "")), 100.1, policy(func(p *TrainPolicy) { p.MaxWorkers = 2 }),
			"commit 1 [a b] stage 0 start 0 end 100 source 0 lost []"},
		{"first: fewer than min workers", nil, view(0, rdy("a", 100, R, 0, 0, "")), 110, policy(func(p *TrainPolicy) { p.MinWorkers = 2 }), "nothing"},
		{"first: stale and finished reports do not count", nil, view(0, rdy("a", 100, R, 0, 0, ""), ReadyReport{TrainReady: natsutil.TrainReady{Worker: "b", Finished: true}, At: at(103)}), 105, policy(func(p *TrainPolicy) { p.MinWorkers = 1 }),
			"nothing"},
		{"first: the most advanced state is the start", nil, view(0, rdy("a", 100, R, 500, 0, ""), rdy("b", 100, D, 30, 0, ""), rdy("c", 100, D, 30, 0, "")), 102.5, policy(),
			"commit 1 [a b c] stage 1 start 30 end 100 source 1 lost []"},

		// After a generation ended: regroup.
		{"regroup: waiting for a member within the grace", gen1Ended(), view(0, rdy("b", 50.5, D, 200, 1, "boundary"), rdy("a", 50.5, D, 200, 1, "boundary")), 51, policy(), "nothing"},
		{"regroup: grace passed, go on without it", gen1Ended(), view(0, rdy("b", 51.5, D, 200, 1, "boundary"), rdy("a", 51.5, D, 200, 1, "boundary")), 52, policy(),
			"commit 2 [b a] stage 1 start 200 end 300 source 0 lost [c]"},
		{"regroup: everyone back, with a newcomer, at once", gen1Ended(), view(0, rdy("c", 50.2, D, 200, 1, "boundary"), rdy("b", 50.1, D, 200, 1, "boundary"), rdy("a", 50.1, D, 200, 1, "boundary"), rdy("0new", 50, R, 0, 0, "")), 50.3, policy(),
			"commit 2 [b a c 0new] stage 1 start 200 end 300 source 0 lost []"},
		{"regroup: a report from before the end does not count", gen1Ended(), view(0, rdy("c", 49.9, D, 180, 0, ""), rdy("b", 50.1, D, 200, 1, "boundary"), rdy("a", 50.1, D, 200, 1, "boundary")), 50.3, policy(), "nothing"},
		{"regroup: source prefers the previous lowest rank holding the state", gen1Ended(), view(0, rdy("b", 50.1, D, 150, 1, "x"), rdy("a", 50.1, D, 160, 1, "x"), rdy("c", 50.1, D, 160, 1, "x")), 50.3, policy(),
			"commit 2 [b a c] stage 1 start 160 end 200 source 1 lost []"},
		{"regroup: max workers prefer positions, then previous members", gen1Ended(), view(0, rdy("b", 50.1, D, 300, 1, "x"), rdy("a", 50.1, D, 300, 1, "x"), rdy("c", 50.1, D, 200, 1, "x"), rdy("d", 50.1, D, 500, 0, "")), 50.3,
			policy(func(p *TrainPolicy) { p.MaxWorkers = 2 }), "commit 2 [b d] stage 1 start 500 end 600 source 1 lost [a c]"},
		{"regroup: no admit boundary", gen1Ended(), view(0, rdy("b", 50.1, D, 200, 1, "x"), rdy("a", 50.1, D, 200, 1, "x"), rdy("c", 50.1, D, 200, 1, "x")), 50.3,
			policy(func(p *TrainPolicy) { p.AdmitEvery = 0 }), "commit 2 [b a c] stage 1 start 200 end 0 source 0 lost []"},
		{"regroup: a new leader waits the grace from when it began", gen1Ended(), view(100, rdy("b", 100.5, D, 200, 1, "x")), 101, policy(), "nothing"},
		{"regroup: a new leader forms after its grace", gen1Ended(), view(100, rdy("b", 101.5, D, 200, 1, "x")), 102, policy(),
			"commit 2 [b] stage 1 start 200 end 300 source 0 lost [a c]"},
		{"regroup: fewer than min workers", gen1Ended(), view(0, rdy("b", 59, D, 200, 1, "x")), 60, policy(func(p *TrainPolicy) { p.MinWorkers = 2 }), "nothing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, res := run(t, tc.cmds)
			for i, r := range res {
				if r.Outcome != OK {
					t.Fatalf("setup command %d: %+v", i, r)
				}
			}
			got := describe(DecideTrain(s, tc.view, at(tc.now), tc.p))
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// What DecideTrain commits carries each rank's address and position, and the FSM
// accepts it once a secret is added.
func TestDecideTrainCommitApplies(t *testing.T) {
	s, _ := run(t, gen1Ended())
	v := view(0, rdy("c", 50.2, natsutil.TrainStageDiffusion, 200, 1, "boundary"), rdy("a", 50.1, natsutil.TrainStageDiffusion, 190, 1, "boundary"))
	a := DecideTrain(s, v, at(53), policy())
	if a.Commit == nil {
		t.Fatal("no commit")
	}
	if r := a.Commit.Ranks[1]; r.Worker != "c" || r.Addr != "h-c:1" || r.Host != "h-c" || r.Step != 200 {
		t.Errorf("rank 1 = %+v", r)
	}
	a.Commit.Secret, _ = NewSecret()
	if r := s.Apply(10, Command{Kind: CmdGenCommit, At: 53 * sec, GenCommit: a.Commit}); r.Outcome != OK {
		t.Fatalf("commit: %+v", r)
	}
	if g := s.ActiveGeneration(); g == nil || fmt.Sprint(g.Ranks) != "[a c]" || fmt.Sprint(g.Lost) != "[b]" || g.Source != 1 {
		t.Errorf("active %+v", g)
	}
	// Members of the running generation are not waiting; a newcomer is.
	v.Ready["d"] = rdy("d", 53.5, natsutil.TrainStageRRDB, 0, 0, "")
	v.Ready["a"] = rdy("a", 53.5, natsutil.TrainStageDiffusion, 190, 1, "")
	if got := ReadyWorkers(s, v, at(54), policy()); fmt.Sprint(got) != "[d]" {
		t.Errorf("ready %v, want [d]", got)
	}
}

func TestBuildTrainStatus(t *testing.T) {
	if st := BuildTrainStatus(NewState(), view(0), at(1), policy()); st != nil {
		t.Errorf("status %+v with nothing to show", st)
	}
	cmds := append(gen1Ended(), genCommit(2, 52*sec, "b", "a", "c"), genFirst(2, 54*sec, 53*sec))
	s, _ := run(t, cmds)
	pa := prog("a", 60, 2, 1, 261, 9)
	pa.Data = &natsutil.DataPlacement{Shards: 4, Total: 12, Hits: 3, Fetched: 1, BytesFetched: 5 << 20}
	v := view(0, prog("b", 60, 2, 0, 260, 10), pa, prog("c", 60, 2, 2, 258, 5), rdy("d", 59.5, natsutil.TrainStageRRDB, 0, 0, ""))
	st := BuildTrainStatus(s, v, at(60.5), policy())
	if d := st.Ranks[1].Data; d == nil || *d != *pa.Data || d == pa.Data || st.Ranks[0].Data != nil {
		t.Errorf("data placement of the ranks: %+v, %+v (want a copy of %+v on rank 1 only)", st.Ranks[1].Data, st.Ranks[0].Data, pa.Data)
	}
	if st.Generation != 2 || !st.Active || st.Stage != natsutil.TrainStageDiffusion || st.Step != 261 {
		t.Errorf("status %+v", st)
	}
	if len(st.Ranks) != 3 || st.Ranks[2].Worker != "c" || st.Ranks[2].StepsPerS != 5 || st.Ranks[2].Addr == "" || st.Ranks[2].LastSeen == "" {
		t.Errorf("ranks %+v", st.Ranks)
	}
	if st.Slowest == nil || st.Slowest.Rank != 2 || st.Slowest.Worker != "c" || st.Slowest.Factor != 1.8 {
		t.Errorf("slowest %+v, want rank 2 (c) 1.8x", st.Slowest)
	}
	if fmt.Sprint(st.Waiting) != "[d]" {
		t.Errorf("waiting %v", st.Waiting)
	}
	if len(st.History) != 2 {
		t.Fatalf("history %+v", st.History)
	}
	h1, h2 := st.History[0], st.History[1]
	if h1.Reason != "boundary" || h1.Ended == "" || h1.LastStep != 200 || h2.Ended != "" || h2.LastStep != 261 || h2.RecoveryS != 3 {
		t.Errorf("history %+v", st.History)
	}
	// A follower has no live view: the generation and its history only.
	st = BuildTrainStatus(s, TrainView{}, at(60.5), policy())
	if st.Generation != 2 || st.Slowest != nil || len(st.Waiting) != 0 || len(st.History) != 2 || st.Ranks[0].StepsPerS != 0 {
		t.Errorf("follower status %+v", st)
	}
	if !strings.Contains(st.History[0].Started, "1970") {
		t.Errorf("started %q", st.History[0].Started)
	}
}

func TestRendezvousGeneration(t *testing.T) {
	for key, want := range map[string]int{natsutil.RendezvousKey(12, 3): 12, natsutil.RendezvousKey(1, 0): 1, "generation": -1, "g1": -1, "gx.r1": -1, "g2.rx": -1} {
		g, ok := rendezvousGeneration(key)
		if (want < 0) == ok || (ok && g != want) {
			t.Errorf("%q: %d %v, want %d", key, g, ok, want)
		}
	}
}

// TestDecideTrainSameConfiguration: workers whose training hash differs from the
// job's never join its generations; before the first generation the hash of the
// worker ready longest is the job's.
func TestDecideTrainSameConfiguration(t *testing.T) {
	hashed := func(r ReadyReport, h string) ReadyReport { r.TrainHash = h; return r }
	p := policy()
	p.MinWorkers = 1
	s := NewState()
	v := view(0, hashed(since(rdy("a", 110, natsutil.TrainStageRRDB, 0, 0, ""), 90), "h1"), hashed(since(rdy("b", 110, natsutil.TrainStageRRDB, 0, 0, ""), 95), "h2"),
		hashed(since(rdy("c", 110, natsutil.TrainStageRRDB, 0, 0, ""), 96), "h1"))
	a := DecideTrain(s, v, at(110), p)
	if got := describe(a); a.Commit == nil || len(a.Commit.Ranks) != 2 || a.Commit.Ranks[0].Worker != "a" || a.Commit.Ranks[1].Worker != "c" {
		t.Fatalf("first generation: %s, want a and c (hash h1 of the worker ready longest)", got)
	}
	for _, r := range a.Commit.Ranks {
		if r.TrainHash != "h1" {
			t.Fatalf("rank %s carries hash %q", r.Worker, r.TrainHash)
		}
	}
	a.Commit.Secret = strings.Repeat("cd", 32)
	if res := s.Apply(1, Command{Kind: CmdGenCommit, At: 110 * sec, GenCommit: a.Commit}); res.Outcome != OK {
		t.Fatalf("commit: %+v", res)
	}
	if h := JobTrainHash(s); h != "h1" {
		t.Fatalf("JobTrainHash = %q, want h1", h)
	}
}
