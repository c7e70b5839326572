package coordinator

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// The checkpoint registry in the state machine. A record is committed only after
// the writer uploaded every file of the checkpoint (the leader checks the bucket
// before proposing), so a committed record always names objects that exist; the
// FSM, not the bucket listing, is the truth consumers read. Retention removes
// records first (CmdCkptPrune) and deletes their objects after.

// Registry command kinds.
const (
	// CmdCkptCommit commits one checkpoint record (once; a repeat is a duplicate).
	CmdCkptCommit Kind = "checkpoint.commit"
	// CmdCkptPrune removes records by ID (tagged ones are kept).
	CmdCkptPrune Kind = "checkpoint.prune"
	// CmdCkptTag sets or removes a user alias.
	CmdCkptTag Kind = "checkpoint.tag"
)

// CheckpointTag is a user alias change (natsutil.CheckpointTag).
type CheckpointTag = natsutil.CheckpointTag

// CheckpointCommit is a record to commit. (Retention is the leader's decision after
// the commit, from the writer's policy; it reaches the FSM as CmdCkptPrune.)
type CheckpointCommit struct {
	Checkpoint natsutil.CheckpointInfo `json:"checkpoint"`
}

// Registry is the replicated checkpoint registry.
type Registry struct {
	// Records are the committed, not pruned checkpoints in commit (Seq) order.
	Records []natsutil.CheckpointInfo `json:"records,omitempty"`
	// LastSeq is the highest sequence number ever assigned.
	LastSeq uint64 `json:"last_seq,omitempty"`
	// Tags maps user aliases to record IDs.
	Tags map[string]string `json:"tags,omitempty"`
	// Pruned counts the records retention removed.
	Pruned int `json:"pruned,omitempty"`
}

func (r Registry) clone() Registry {
	c := r
	c.Records = make([]natsutil.CheckpointInfo, len(r.Records))
	for i, rec := range r.Records {
		c.Records[i] = cloneInfo(rec)
	}
	c.Tags = nil
	for k, v := range r.Tags {
		if c.Tags == nil {
			c.Tags = map[string]string{}
		}
		c.Tags[k] = v
	}
	return c
}

func cloneInfo(rec natsutil.CheckpointInfo) natsutil.CheckpointInfo {
	rec.Files = slices.Clone(rec.Files)
	if rec.Metrics != nil {
		m := make(map[string]float64, len(rec.Metrics))
		for k, v := range rec.Metrics {
			m[k] = v
		}
		rec.Metrics = m
	}
	return rec
}

// find returns the index of the record with id, or -1.
func (r *Registry) find(id string) int {
	for i := range r.Records {
		if r.Records[i].ID == id {
			return i
		}
	}
	return -1
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// validInfo says what is wrong with a record to commit ("" when nothing).
func validInfo(c natsutil.CheckpointInfo) string {
	switch {
	case c.ID == "" || c.Stage == "":
		return "checkpoint record without an ID or stage"
	case len(c.Files) == 0:
		return fmt.Sprintf("checkpoint %s lists no files", c.ID)
	}
	seen := map[string]bool{}
	for _, f := range c.Files {
		if f.Name == "" || strings.ContainsAny(f.Name, `/\`) || f.Name == "." || f.Name == ".." {
			return fmt.Sprintf("checkpoint %s: file name %q is not a plain file name", c.ID, f.Name)
		}
		if seen[f.Name] {
			return fmt.Sprintf("checkpoint %s lists file %s twice", c.ID, f.Name)
		}
		seen[f.Name] = true
		if !sha256Hex.MatchString(f.SHA256) || f.Size < 0 {
			return fmt.Sprintf("checkpoint %s: file %s has SHA-256 %q and size %d (want 64 lower-case hex digits and a size >= 0)", c.ID, f.Name, f.SHA256, f.Size)
		}
	}
	return ""
}

func sameFiles(a, b []natsutil.CheckpointFile) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(fs []natsutil.CheckpointFile) []string {
		out := make([]string, len(fs))
		for i, f := range fs {
			out[i] = f.Name + "\x00" + f.SHA256
		}
		sort.Strings(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}

func (s *State) applyCkptCommit(cmd Command) Result {
	c := cmd.CkptCommit
	if c == nil {
		return rejected("checkpoint commit without payload")
	}
	if why := validInfo(c.Checkpoint); why != "" {
		return rejected("%s", why)
	}
	r := &s.Registry
	if i := r.find(c.Checkpoint.ID); i >= 0 {
		if sameFiles(r.Records[i].Files, c.Checkpoint.Files) {
			return Result{Outcome: Duplicate, Seq: r.Records[i].Seq}
		}
		return rejected("checkpoint %s is already committed with other files (seq %d); a checkpoint never changes once committed", c.Checkpoint.ID, r.Records[i].Seq)
	}
	rec := cloneInfo(c.Checkpoint)
	r.LastSeq++
	rec.Seq = r.LastSeq
	if rec.Created.IsZero() {
		rec.Created = time.Unix(0, cmd.At).UTC()
	}
	r.Records = append(r.Records, rec)
	return Result{Outcome: OK, Seq: rec.Seq}
}

func (s *State) applyCkptPrune(cmd Command) Result {
	r := &s.Registry
	drop := map[string]bool{}
	for _, id := range cmd.CkptPrune {
		drop[id] = true
	}
	for _, target := range r.Tags {
		delete(drop, target) // a tag set since the decision protects its checkpoint
	}
	kept := r.Records[:0]
	for _, rec := range r.Records {
		if drop[rec.ID] {
			r.Pruned++
			continue
		}
		kept = append(kept, rec)
	}
	clear(r.Records[len(kept):])
	r.Records = kept
	return Result{Outcome: OK}
}

// reservedAlias says whether alias is computed by the registry (latest, best and
// their per-stage forms) and so cannot be set.
func reservedAlias(alias string) bool {
	for _, p := range []string{"latest", "best"} {
		if alias == p || strings.HasPrefix(alias, p+".") {
			return true
		}
	}
	return false
}

var aliasName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (s *State) applyCkptTag(cmd Command) Result {
	t := cmd.CkptTag
	if t == nil {
		return rejected("checkpoint tag without payload")
	}
	if !aliasName.MatchString(t.Alias) {
		return rejected("alias %q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", t.Alias)
	}
	if reservedAlias(t.Alias) {
		return rejected("alias %q is computed by the registry (latest, best, latest.STAGE, best.STAGE); choose another name", t.Alias)
	}
	r := &s.Registry
	if t.Remove {
		if _, ok := r.Tags[t.Alias]; !ok {
			return rejected("no alias %q to remove", t.Alias)
		}
		delete(r.Tags, t.Alias)
		return Result{Outcome: OK}
	}
	if r.find(t.ID) < 0 {
		return rejected("no committed checkpoint %q to tag (see `samdiffsr checkpoints list`)", t.ID)
	}
	if r.Tags == nil {
		r.Tags = map[string]string{}
	}
	r.Tags[t.Alias] = t.ID
	return Result{Outcome: OK}
}

// stageRank orders stages: the known training stages in pipeline order, any other
// after them.
func stageRank(stage string) int {
	switch stage {
	case "rrdb":
		return 0
	case "diffusion":
		return 1
	}
	return 2
}

// MainStage is the stage "latest" and "best" refer to: the last pipeline stage
// that has any record ("" when the registry is empty).
func MainStage(records []natsutil.CheckpointInfo) string {
	best := ""
	for _, r := range records {
		if best == "" || stageRank(r.Stage) > stageRank(best) {
			best = r.Stage
		}
	}
	return best
}

// newest returns the index of the record of stage with the highest step (then the
// highest Seq), or -1.
func newest(records []natsutil.CheckpointInfo, stage string) int {
	at := -1
	for i, r := range records {
		if r.Stage != stage {
			continue
		}
		if at < 0 || r.Step > records[at].Step || (r.Step == records[at].Step && r.Seq > records[at].Seq) {
			at = i
		}
	}
	return at
}

// bestOf returns the index of the record of stage with the highest val_psnr_y
// (ties: the higher step), or -1 when none has the metric.
func bestOf(records []natsutil.CheckpointInfo, stage string) int {
	at := -1
	for i, r := range records {
		v, ok := r.Metrics[natsutil.MetricValPSNRY]
		if r.Stage != stage || !ok {
			continue
		}
		if at < 0 {
			at = i
			continue
		}
		b := records[at].Metrics[natsutil.MetricValPSNRY]
		if v > b || (v == b && r.Step > records[at].Step) {
			at = i
		}
	}
	return at
}

// Aliases computes every alias of the registry: "latest" and "best" (of the main
// stage), "latest.STAGE" and "best.STAGE" for each stage, and the user's tags.
func Aliases(r Registry) map[string]string {
	out := map[string]string{}
	stages := map[string]bool{}
	for _, rec := range r.Records {
		stages[rec.Stage] = true
	}
	for st := range stages {
		if i := newest(r.Records, st); i >= 0 {
			out["latest."+st] = r.Records[i].ID
		}
		if i := bestOf(r.Records, st); i >= 0 {
			out["best."+st] = r.Records[i].ID
		}
	}
	if main := MainStage(r.Records); main != "" {
		if id, ok := out["latest."+main]; ok {
			out["latest"] = id
		}
		if id, ok := out["best."+main]; ok {
			out["best"] = id
		}
	}
	for k, v := range r.Tags {
		out[k] = v
	}
	return out
}

// Retain decides which records retention removes: per stage, everything but the
// newest pol.KeepLast (0 keeps all), the steps that are multiples of pol.KeepEvery,
// the best by val_psnr_y (pol.KeepBest), the newest record and the tagged ones.
// The result is in commit order.
func Retain(r Registry, pol natsutil.CheckpointRetention) []string {
	if pol.KeepLast <= 0 {
		return nil
	}
	keep := map[string]bool{}
	for _, id := range r.Tags {
		keep[id] = true
	}
	byStage := map[string][]natsutil.CheckpointInfo{}
	for _, rec := range r.Records {
		byStage[rec.Stage] = append(byStage[rec.Stage], rec)
	}
	for st, recs := range byStage {
		sorted := slices.Clone(recs)
		sort.SliceStable(sorted, func(i, j int) bool {
			if sorted[i].Step != sorted[j].Step {
				return sorted[i].Step > sorted[j].Step
			}
			return sorted[i].Seq > sorted[j].Seq
		})
		for i, rec := range sorted {
			if i < pol.KeepLast || (pol.KeepEvery > 0 && rec.Step%int64(pol.KeepEvery) == 0) {
				keep[rec.ID] = true
			}
		}
		if pol.KeepBest {
			if i := bestOf(recs, st); i >= 0 {
				keep[recs[i].ID] = true
			}
		}
	}
	var drop []string
	for _, rec := range r.Records {
		if !keep[rec.ID] {
			drop = append(drop, rec.ID)
		}
	}
	return drop
}

// Unreferenced lists the object names of files of removed records that no record
// of r still references (content-addressed objects may be shared).
func Unreferenced(r Registry, removed []natsutil.CheckpointInfo) []string {
	used := map[string]bool{}
	for _, rec := range r.Records {
		for _, f := range rec.Files {
			used[f.SHA256] = true
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, rec := range removed {
		for _, f := range rec.Files {
			if !used[f.SHA256] && !seen[f.SHA256] {
				seen[f.SHA256] = true
				out = append(out, natsutil.CheckpointObject(f.SHA256))
			}
		}
	}
	return out
}

// RegistryList answers a list request from the state: the records after
// req.AfterSeq (of req.Stage when set) in commit order, at most req.Limit.
func RegistryList(s *State, req natsutil.CheckpointListRequest) natsutil.CheckpointList {
	r := s.Registry
	out := natsutil.CheckpointList{Aliases: Aliases(r), LastSeq: r.LastSeq, Checkpoints: []natsutil.CheckpointInfo{}}
	for _, rec := range r.Records {
		if rec.Seq <= req.AfterSeq || (req.Stage != "" && rec.Stage != req.Stage) {
			continue
		}
		if req.Limit > 0 && len(out.Checkpoints) == req.Limit {
			out.More = true
			break
		}
		out.Checkpoints = append(out.Checkpoints, cloneInfo(rec))
	}
	return out
}

// BuildRegistryStatus is the registry part of the status (nil when empty).
func BuildRegistryStatus(s *State) *natsutil.RegistryStatus {
	r := s.Registry
	if len(r.Records) == 0 {
		return nil
	}
	st := &natsutil.RegistryStatus{Count: len(r.Records)}
	al := Aliases(r)
	for _, rec := range r.Records {
		if rec.ID == al["latest"] {
			x := cloneInfo(rec)
			st.Latest = &x
		}
		if rec.ID == al["best"] {
			x := cloneInfo(rec)
			st.Best = &x
		}
	}
	return st
}
