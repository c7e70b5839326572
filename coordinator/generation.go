package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// Training generations in the state machine. Only a generation's boundaries go
// through raft: its commit (the world, where it starts, its secret), its first
// applied step (for the recovery time) and its end. Progress between them stays in
// the leader's memory (leader_train.go).
//
// Fencing: a commit must be numbered one past the last generation and the last one
// must have ended; an end must name the active generation. Anything else is refused
// in Apply, so a stale leader's or a repeated command cannot fork the world.

// Training command kinds.
const (
	// CmdGenCommit commits the next generation.
	CmdGenCommit Kind = "generation.commit"
	// CmdGenEnd ends the active generation.
	CmdGenEnd Kind = "generation.end"
	// CmdGenFirstStep records a generation's first applied step (once).
	CmdGenFirstStep Kind = "generation.first_step"
)

// Stale is the outcome of a training command naming a generation that is no longer
// the active one (an end repeated, or one racing a newer generation): it is ignored.
const Stale Outcome = "stale"

// GenerationCommit is the content of a new generation, decided by the leader
// (DecideTrain) with its secret.
type GenerationCommit struct {
	Number    int                 `json:"number"`
	Ranks     []natsutil.RankInfo `json:"ranks"`
	Stage     int                 `json:"stage"`
	StartStep int64               `json:"start_step"`
	Source    int                 `json:"source"`
	EndStep   int64               `json:"end_step,omitempty"`
	Secret    string              `json:"secret"`
	// Lost lists the previous generation's workers left out.
	Lost []string `json:"lost,omitempty"`
}

// GenerationEnd ends generation Number: why, the highest step reported, and the
// members that went silent (when that is why).
type GenerationEnd struct {
	Number   int      `json:"number"`
	Reason   string   `json:"reason"`
	LastStep int64    `json:"last_step"`
	Lost     []string `json:"lost,omitempty"`
}

// GenerationFirstStep says a rank of generation Number applied its first step at At
// (unix ns, as the rank reported it).
type GenerationFirstStep struct {
	Number int   `json:"number"`
	At     int64 `json:"at"`
}

// NewSecret returns a fresh generation secret: 32 random bytes, hex.
func NewSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("coordinator: generation secret: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// LastGeneration returns the latest generation (nil: none yet).
func (s *State) LastGeneration() *Generation {
	if len(s.Generations) == 0 {
		return nil
	}
	return &s.Generations[len(s.Generations)-1]
}

// ActiveGeneration returns the generation running now (nil: none).
func (s *State) ActiveGeneration() *Generation {
	if g := s.LastGeneration(); g != nil && !g.Ended {
		return g
	}
	return nil
}

// generation returns generation number (nil: unknown). Numbers are dense from 1.
func (s *State) generation(number int) *Generation {
	i := number - 1
	if len(s.Generations) > 0 {
		i = number - s.Generations[0].Number
	}
	if i < 0 || i >= len(s.Generations) || s.Generations[i].Number != number {
		return nil
	}
	return &s.Generations[i]
}

// Info is the generation as workers read it from the training bucket.
func (g *Generation) Info() natsutil.GenerationInfo {
	return natsutil.GenerationInfo{Number: g.Number, Ranks: slices.Clone(g.RankInfo), Stage: g.Stage,
		StartStep: g.StartStep, Source: g.Source, EndStep: g.EndStep, Secret: g.Secret,
		Created: time.Unix(0, g.CreatedAt).UTC()}
}

func (g Generation) clone() Generation {
	g.Ranks = slices.Clone(g.Ranks)
	g.RankInfo = slices.Clone(g.RankInfo)
	g.Lost = slices.Clone(g.Lost)
	g.Silent = slices.Clone(g.Silent)
	return g
}

func (s *State) applyGenCommit(cmd Command) Result {
	c := cmd.GenCommit
	if c == nil {
		return rejected("generation.commit without payload")
	}
	next := 1
	if last := s.LastGeneration(); last != nil {
		next = last.Number + 1
		if !last.Ended {
			return rejected("generation %d: generation %d is still active (end it first)", c.Number, last.Number)
		}
	}
	if c.Number != next {
		return rejected("generation %d: the next generation is %d", c.Number, next)
	}
	if len(c.Ranks) == 0 {
		return rejected("generation %d without ranks", c.Number)
	}
	seen := map[string]bool{}
	ids := make([]string, len(c.Ranks))
	for i, r := range c.Ranks {
		if r.Worker == "" || r.Addr == "" {
			return rejected("generation %d: rank %d needs a worker id and an address", c.Number, i)
		}
		if seen[r.Worker] {
			return rejected("generation %d: worker %s holds two ranks", c.Number, r.Worker)
		}
		seen[r.Worker] = true
		ids[i] = r.Worker
	}
	if c.Source < 0 || c.Source >= len(c.Ranks) {
		return rejected("generation %d: source rank %d outside the world of %d", c.Number, c.Source, len(c.Ranks))
	}
	if c.Secret == "" {
		return rejected("generation %d without a secret", c.Number)
	}
	s.Generations = append(s.Generations, Generation{
		Number: c.Number, Ranks: ids, RankInfo: slices.Clone(c.Ranks), Stage: c.Stage, StartStep: c.StartStep,
		Source: c.Source, EndStep: c.EndStep, Secret: c.Secret, Lost: slices.Clone(c.Lost),
		CreatedAt: cmd.At, LastStep: c.StartStep,
	})
	return Result{Outcome: OK}
}

func (s *State) applyGenEnd(cmd Command) Result {
	e := cmd.GenEnd
	if e == nil {
		return rejected("generation.end without payload")
	}
	g := s.generation(e.Number)
	switch {
	case g == nil:
		return rejected("generation.end: no generation %d", e.Number)
	case g.Ended:
		return Result{Outcome: Stale, Err: fmt.Sprintf("generation %d already ended (%s)", g.Number, g.EndReason)}
	}
	g.Ended, g.EndedAt, g.EndReason = true, cmd.At, e.Reason
	g.LastStep = max(g.LastStep, e.LastStep)
	g.Silent = slices.Clone(e.Lost)
	return Result{Outcome: OK}
}

func (s *State) applyGenFirstStep(cmd Command) Result {
	f := cmd.GenFirstStep
	if f == nil {
		return rejected("generation.first_step without payload")
	}
	g := s.generation(f.Number)
	if g == nil {
		return rejected("generation.first_step: no generation %d", f.Number)
	}
	if g.FirstStepAt != 0 {
		return Result{Outcome: Duplicate}
	}
	// The rank's clock may differ from the leader's: keep the time between the
	// commit and the command (both leader clock).
	at := f.At
	if at < g.CreatedAt || at == 0 {
		at = g.CreatedAt
	}
	if cmd.At != 0 && at > cmd.At {
		at = cmd.At
	}
	g.FirstStepAt = at
	if prev := s.generation(f.Number - 1); prev != nil && prev.Ended {
		g.RecoveryNanos = max(0, at-prev.EndedAt)
	}
	return Result{Outcome: OK}
}
