package coordinator

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// The leader's training decisions, as plain functions of the state, what the leader
// has heard from training workers (TrainView) and the time. leader_train.go turns
// them into raft commands and KV puts.

// ReadyReport is a worker's latest TrainReady and when the leader received it.
type ReadyReport struct {
	natsutil.TrainReady
	At time.Time
	// Since is when the worker's current run of ready reports began (the first report
	// after none, or after a report for another generation or of another kind).
	Since time.Time
}

// ProgressReport is a rank's latest TrainProgress and when the leader received it.
type ProgressReport struct {
	natsutil.TrainProgress
	At time.Time
}

// TrainView is the leader's in-memory view of the training workers. It is the
// leader's only (not replicated): a new leader rebuilds it from fresh reports.
type TrainView struct {
	// Ready and Progress hold each worker's latest report.
	Ready    map[string]ReadyReport
	Progress map[string]ProgressReport
	// LeaderSince is when this voter became the leader: nobody is judged silent,
	// and no regroup grace counts, from before it.
	LeaderSince time.Time
}

// TrainPolicy is what DecideTrain needs of the configuration.
type TrainPolicy struct {
	configs.ClusterTrain
	// Heartbeat is the workers' heartbeat (cluster.worker.heartbeat): a TrainReady
	// counts for 3 of them.
	Heartbeat time.Duration
}

// readyWindow is how long a TrainReady counts.
func (p TrainPolicy) readyWindow() time.Duration { return 3 * p.Heartbeat }

// TrainAction is what the leader must do now: nothing (both nil), end the active
// generation, or commit a new one (its Secret left for the leader to fill in).
type TrainAction struct {
	End    *GenerationEnd
	Commit *GenerationCommit
}

// IsReady reports whether worker w is ready for the next generation: its latest
// TrainReady is fresh (within 3 heartbeats), it has not finished, and, when it was a
// member of the last (ended) generation, the report came after that generation ended
// (so a report sent before it joined does not count with its old position).
func IsReady(s *State, v TrainView, w string, now time.Time, p TrainPolicy) bool {
	r, ok := v.Ready[w]
	if !ok || r.Finished || now.Sub(r.At) > p.readyWindow() {
		return false
	}
	if g := s.LastGeneration(); g != nil && slices.Contains(g.Ranks, w) {
		if !g.Ended {
			return false
		}
		return !r.At.Before(time.Unix(0, g.EndedAt))
	}
	return true
}

// ReadyWorkers returns the ready workers (IsReady), sorted by id.
func ReadyWorkers(s *State, v TrainView, now time.Time, p TrainPolicy) []string {
	var ids []string
	for w := range v.Ready {
		if IsReady(s, v, w, now, p) {
			ids = append(ids, w)
		}
	}
	sort.Strings(ids)
	return ids
}

// DecideTrain returns what the leader must do about training now.
//
// While a generation is active it ends it when a member reports TrainReady for it
// (the member left it: boundary, stage end, or an error, which becomes the reason),
// or when a member has sent neither TrainProgress nor TrainReady for LostAfter (it is
// lost). Ready non-members wait for the next boundary.
//
// With no active generation it forms the next when at least MinWorkers are ready
// and the world is settled: every member of the last generation reported back,
// or RegroupGrace passed since it ended (and since this voter leads), or, for the
// first generation, MaxWorkers are ready or the ready set has not changed for
// RegroupGrace.
func DecideTrain(s *State, v TrainView, now time.Time, p TrainPolicy) TrainAction {
	if g := s.ActiveGeneration(); g != nil {
		if e := decideEnd(g, v, now, p); e != nil {
			return TrainAction{End: e}
		}
		return TrainAction{}
	}
	if c := decideForm(s, v, now, p); c != nil {
		return TrainAction{Commit: c}
	}
	return TrainAction{}
}

// lastStep is the highest step the view holds for generation g.
func lastStep(g *Generation, v TrainView) int64 {
	step := g.LastStep
	for _, w := range g.Ranks {
		if pr, ok := v.Progress[w]; ok && pr.Generation == g.Number {
			step = max(step, pr.Step)
		}
		if r, ok := v.Ready[w]; ok && r.Generation == g.Number && r.Stage == g.Stage {
			step = max(step, r.Step)
		}
	}
	return step
}

func decideEnd(g *Generation, v TrainView, now time.Time, p TrainPolicy) *GenerationEnd {
	// A member left it: the earliest report's reason ends it.
	var left *ReadyReport
	leftRank := -1
	for rank, w := range g.Ranks {
		r, ok := v.Ready[w]
		if !ok || r.Generation != g.Number {
			continue
		}
		if left == nil || r.At.Before(left.At) {
			left, leftRank = &r, rank
		}
	}
	if left != nil {
		reason := left.Reason
		switch {
		case left.Finished && reason == "":
			reason = natsutil.LeaveFinished
		case reason == "":
			reason = fmt.Sprintf("rank %d (%s) left without a reason", leftRank, left.Worker)
		case reason != natsutil.LeaveBoundary && reason != natsutil.LeaveStage && reason != natsutil.LeaveFinished:
			reason = fmt.Sprintf("rank %d (%s): %s", leftRank, left.Worker, reason)
		}
		return &GenerationEnd{Number: g.Number, Reason: reason, LastStep: lastStep(g, v)}
	}
	// A member went silent.
	base := time.Unix(0, g.CreatedAt)
	if v.LeaderSince.After(base) {
		base = v.LeaderSince
	}
	var lost, why []string
	for rank, w := range g.Ranks {
		seen := base
		if pr, ok := v.Progress[w]; ok && pr.Generation == g.Number && pr.At.After(seen) {
			seen = pr.At
		}
		if r, ok := v.Ready[w]; ok && r.At.After(seen) {
			seen = r.At
		}
		if d := now.Sub(seen); d >= p.LostAfter {
			lost = append(lost, w)
			why = append(why, fmt.Sprintf("rank %d (%s) silent for %.1fs", rank, w, d.Seconds()))
		}
	}
	if len(lost) > 0 {
		return &GenerationEnd{Number: g.Number, Reason: strings.Join(why, "; "), LastStep: lastStep(g, v), Lost: lost}
	}
	return nil
}

// position orders training states: stage first, then step.
func position(stage int, step int64) [2]int64 { return [2]int64{int64(stage), step} }

func cmpPosition(a, b [2]int64) int {
	if c := cmp.Compare(a[0], b[0]); c != 0 {
		return c
	}
	return cmp.Compare(a[1], b[1])
}

func decideForm(s *State, v TrainView, now time.Time, p TrainPolicy) *GenerationCommit {
	last := s.LastGeneration()
	ready := sameTraining(ReadyWorkers(s, v, now, p), v, JobTrainHash(s))
	if len(ready) < max(p.MinWorkers, 1) {
		return nil
	}
	if !settled(last, v, ready, now, p) {
		return nil
	}
	prevRank := map[string]int{}
	if last != nil {
		for i, w := range last.Ranks {
			prevRank[w] = i
		}
	}
	pos := func(w string) [2]int64 { r := v.Ready[w]; return position(r.Stage, r.Step) }
	// Choose: higher positions first, then previous members (in their rank order),
	// then by id.
	chosen := slices.Clone(ready)
	slices.SortStableFunc(chosen, func(a, b string) int {
		if c := cmpPosition(pos(b), pos(a)); c != 0 {
			return c
		}
		ra, okA := prevRank[a]
		rb, okB := prevRank[b]
		switch {
		case okA && okB:
			return cmp.Compare(ra, rb)
		case okA:
			return -1
		case okB:
			return 1
		}
		return strings.Compare(a, b)
	})
	if p.MaxWorkers > 0 && len(chosen) > p.MaxWorkers {
		chosen = chosen[:p.MaxWorkers]
	}
	if len(chosen) < max(p.MinWorkers, 1) {
		return nil
	}
	// Rank order: previous members in their previous order (rank 0, the writer,
	// stays where it was while alive), then newcomers by id.
	slices.SortFunc(chosen, func(a, b string) int {
		ra, okA := prevRank[a]
		rb, okB := prevRank[b]
		switch {
		case okA && okB:
			return cmp.Compare(ra, rb)
		case okA:
			return -1
		case okB:
			return 1
		}
		return strings.Compare(a, b)
	})
	c := &GenerationCommit{Number: 1}
	if last != nil {
		c.Number = last.Number + 1
	}
	top := pos(chosen[0])
	for _, w := range chosen {
		if cmpPosition(pos(w), top) > 0 {
			top = pos(w)
		}
	}
	c.Source = -1
	for i, w := range chosen {
		r := v.Ready[w]
		c.Ranks = append(c.Ranks, natsutil.RankInfo{Worker: w, Host: r.Host, Addr: r.Addr, Stage: r.Stage, Step: r.Step, TrainHash: r.TrainHash})
		if c.Source < 0 && cmpPosition(pos(w), top) == 0 {
			c.Source = i
		}
	}
	c.Stage, c.StartStep = int(top[0]), top[1]
	if p.AdmitEvery > 0 {
		every := int64(p.AdmitEvery)
		c.EndStep = (c.StartStep/every + 1) * every
	}
	if last != nil {
		for _, w := range last.Ranks {
			if !slices.Contains(chosen, w) {
				c.Lost = append(c.Lost, w)
			}
		}
	}
	return c
}

// JobTrainHash is the training configuration hash of the job's generations (that
// of the last one), "" before the first.
func JobTrainHash(s *State) string {
	if last := s.LastGeneration(); last != nil && len(last.RankInfo) > 0 {
		return last.RankInfo[0].TrainHash
	}
	return ""
}

// sameTraining keeps the ready workers whose training hash is want; with want ""
// (no generation yet), that of the worker ready longest (then by id), so workers
// started with another configuration never join the job's generations.
func sameTraining(ready []string, v TrainView, want string) []string {
	if want == "" {
		var first string
		for _, w := range ready {
			r := v.Ready[w]
			if f, ok := v.Ready[first]; first == "" || !ok || r.Since.Before(f.Since) || (r.Since.Equal(f.Since) && w < first) {
				first = w
			}
		}
		if first == "" {
			return ready
		}
		want = v.Ready[first].TrainHash
	}
	out := ready[:0:0]
	for _, w := range ready {
		if v.Ready[w].TrainHash == want {
			out = append(out, w)
		}
	}
	return out
}

// settled reports whether the leader may form the next generation from ready.
func settled(last *Generation, v TrainView, ready []string, now time.Time, p TrainPolicy) bool {
	if last != nil {
		ended := time.Unix(0, last.EndedAt)
		all := true
		for _, w := range last.Ranks {
			if r, ok := v.Ready[w]; !ok || r.At.Before(ended) || now.Sub(r.At) > p.readyWindow() {
				all = false
				break
			}
		}
		if all {
			return true
		}
		since := ended
		if v.LeaderSince.After(since) {
			since = v.LeaderSince
		}
		return now.Sub(since) >= p.RegroupGrace
	}
	if p.MaxWorkers > 0 && len(ready) >= p.MaxWorkers {
		return true
	}
	// The first generation: wait until the ready set has not changed for the grace,
	// so that workers starting together form one world.
	changed := v.LeaderSince
	for _, w := range ready {
		if r := v.Ready[w]; r.Since.After(changed) {
			changed = r.Since
		}
	}
	for w, r := range v.Ready {
		if slices.Contains(ready, w) {
			continue
		}
		// A worker that dropped out (stale or finished) changed the set too.
		gone := r.At.Add(p.readyWindow())
		if r.Finished {
			gone = r.At
		}
		if gone.After(changed) && !gone.After(now) {
			changed = gone
		}
	}
	return now.Sub(changed) >= p.RegroupGrace
}

// statusHistory bounds the generations Status lists (the latest ones).
const statusHistory = 100

// BuildTrainStatus summarises training for `samdiffsr status`: the latest
// generation from the state, the ranks' latest progress and the waiting workers from
// the leader's view (empty on a follower), and the history. It returns nil when
// there is nothing to show.
func BuildTrainStatus(s *State, v TrainView, now time.Time, p TrainPolicy) *natsutil.TrainStatus {
	g := s.LastGeneration()
	waiting := ReadyWorkers(s, v, now, p)
	if g == nil && len(waiting) == 0 {
		return nil
	}
	ts := &natsutil.TrainStatus{Waiting: waiting}
	if g != nil {
		ts.Generation, ts.Active, ts.Stage = g.Number, !g.Ended, g.Stage
		ts.Step = lastStep(g, v)
		var rates []float64
		for rank, w := range g.Ranks {
			rs := natsutil.RankStatus{Rank: rank, Worker: w}
			if rank < len(g.RankInfo) {
				rs.Addr, rs.Step = g.RankInfo[rank].Addr, g.StartStep
			}
			if pr, ok := v.Progress[w]; ok && pr.Generation == g.Number {
				rs.Step, rs.StepsPerS, rs.ComputeS, rs.WaitS, rs.Bytes = pr.Step, pr.StepsPerS, pr.ComputeS, pr.WaitS, pr.Bytes
				rs.LastSeen = pr.At.UTC().Format(time.RFC3339Nano)
				if pr.Data != nil {
					d := *pr.Data
					rs.Data = &d
				}
				if pr.StepsPerS > 0 {
					rates = append(rates, pr.StepsPerS)
				}
			}
			ts.Ranks = append(ts.Ranks, rs)
		}
		if len(g.Ranks) >= 2 && len(rates) >= 2 {
			slices.Sort(rates)
			median := rates[len(rates)/2]
			if len(rates)%2 == 0 {
				median = (rates[len(rates)/2-1] + rates[len(rates)/2]) / 2
			}
			var slow *natsutil.RankStatus
			for i := range ts.Ranks {
				r := &ts.Ranks[i]
				if r.StepsPerS > 0 && (slow == nil || r.StepsPerS < slow.StepsPerS) {
					slow = r
				}
			}
			ts.Slowest = &natsutil.SlowRank{Rank: slow.Rank, Worker: slow.Worker, Factor: median / slow.StepsPerS}
		}
	}
	gens := s.Generations
	if len(gens) > statusHistory {
		gens = gens[len(gens)-statusHistory:]
	}
	for i := range gens {
		h := &gens[i]
		gs := natsutil.GenerationStatus{Number: h.Number, Workers: slices.Clone(h.Ranks), Stage: h.Stage, StartStep: h.StartStep,
			LastStep: h.LastStep, Started: time.Unix(0, h.CreatedAt).UTC().Format(time.RFC3339), Reason: h.EndReason,
			Lost: slices.Clone(h.Lost), RecoveryS: float64(h.RecoveryNanos) / 1e9}
		if h.Ended {
			gs.Ended = time.Unix(0, h.EndedAt).UTC().Format(time.RFC3339)
		} else {
			gs.LastStep = ts.Step
		}
		ts.History = append(ts.History, gs)
	}
	return ts
}
