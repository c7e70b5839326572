// Package coordinator is the system's memory: a raft-replicated state machine holding
// the job spec, the dataset manifest, the mask-task ledger, the worker registry and
// the training generations (with room for the checkpoint registry), the leader loop
// that dispatches mask tasks over NATS JetStream and reconciles the queue with the
// ledger, forms and ends training generations, and the status API.
//
// The state machine (State, Command, State.Apply) is plain data with deterministic
// Apply: every time it needs comes inside the command, stamped by the leader, so it is
// tested without a network. Raft (hashicorp/raft with raft-boltdb) and NATS live at
// the edges, in Node.
package coordinator

import (
	"sort"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// TaskState is where a mask task stands in the ledger.
type TaskState string

// Task states. Done and Failed are final.
const (
	TaskPending TaskState = "pending"
	TaskLeased  TaskState = "leased"
	TaskDone    TaskState = "done"
	TaskFailed  TaskState = "failed"
)

// Final reports whether s is a final state (done or failed).
func (s TaskState) Final() bool { return s == TaskDone || s == TaskFailed }

// JobSpec identifies the job the coordinator runs.
type JobSpec struct {
	// Name is the job name (cluster.nats.job).
	Name string `json:"name"`
	// ConfigHash is configs.Config.Hash() of the submitted configuration.
	ConfigHash string `json:"config_hash"`
	// MaxDeliver bounds the attempts of one mask task.
	MaxDeliver int `json:"max_deliver"`
	// LeaseTTLNanos is how long a lease lasts without completion.
	LeaseTTLNanos int64 `json:"lease_ttl_ns"`
	// SubmittedAt is when the job was first submitted (unix nanoseconds, leader clock).
	SubmittedAt int64 `json:"submitted_at"`
}

// Image is one dataset manifest entry.
type Image struct {
	ID     string `json:"id"`
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// MaskTask is the ledger entry of one image's mask task (task id = image id).
type MaskTask struct {
	ID    string    `json:"id"`
	State TaskState `json:"state"`
	// Worker holds (or last held) the lease; LeaseUntil is its expiry (unix ns).
	Worker     string `json:"worker,omitempty"`
	LeaseUntil int64  `json:"lease_until,omitempty"`
	// Attempts is the highest delivery attempt a worker has started.
	Attempts int `json:"attempts"`
	// Seq is the JetStream sequence of the task's message (0: not published yet);
	// Publishes counts publications (the de-duplication id is "<id>#<Publishes>").
	Seq       uint64 `json:"seq,omitempty"`
	Publishes int    `json:"publishes,omitempty"`
	// ResultKey is the Object Store key of the label map, Digest its SHA-256, Regions its region count.
	ResultKey string `json:"result_key,omitempty"`
	Digest    string `json:"digest,omitempty"`
	Regions   int    `json:"regions,omitempty"`
	// DoneIndex is the raft index that committed the final state; DoneAt its leader time.
	DoneIndex uint64 `json:"done_index,omitempty"`
	DoneAt    int64  `json:"done_at,omitempty"`
	// Reason is why the last attempt failed (or why the task failed for good).
	Reason string `json:"reason,omitempty"`
	// Duplicates counts reports recognised as repeats of a final state and ignored.
	Duplicates int `json:"duplicates,omitempty"`
}

// WorkerInfo is one worker in the registry.
type WorkerInfo struct {
	ID        string   `json:"id"`
	Roles     []string `json:"roles"`
	Host      string   `json:"host,omitempty"`
	FirstSeen int64    `json:"first_seen"`
	LastSeen  int64    `json:"last_seen"`
	// Done counts tasks this worker completed (committed once each).
	Done int `json:"done"`
	// Failed counts attempts this worker reported as failed.
	Failed int `json:"failed"`
}

// Voter is a raft voter as recorded by membership commands.
type Voter struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// Generation is a training generation: a world of ranks that starts from one state
// (stage, step) and runs until a boundary, a stage end or a failure ends it. Only its
// boundaries go through raft (generation.go); the steps in between do not.
type Generation struct {
	Number int `json:"number"`
	// Ranks lists the world's worker ids in rank order; RankInfo the same ranks with
	// where they listen and where their state was when the generation formed.
	Ranks    []string            `json:"ranks"`
	RankInfo []natsutil.RankInfo `json:"rank_info,omitempty"`
	// Stage and StartStep are where every rank starts; Source is the rank holding it.
	Stage     int   `json:"stage"`
	StartStep int64 `json:"start_step"`
	Source    int   `json:"source"`
	// EndStep, when > 0, is the step at which the generation ends to admit workers.
	EndStep int64 `json:"end_step,omitempty"`
	// Secret (hex) authenticates the ranks' collective connections.
	Secret     string `json:"secret,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
	// Lost lists the previous generation's workers this one went on without.
	Lost []string `json:"lost,omitempty"`
	// CreatedAt is when it was committed (unix ns, leader clock).
	CreatedAt int64 `json:"created_at,omitempty"`
	// LastStep is the highest step a rank reported when it ended.
	LastStep int64 `json:"last_step"`
	// Ended says it is over: at EndedAt (unix ns), for EndReason; Silent lists the
	// members that ended it by going silent.
	Ended     bool     `json:"ended,omitempty"`
	EndedAt   int64    `json:"ended_at,omitempty"`
	EndReason string   `json:"end_reason,omitempty"`
	Silent    []string `json:"silent,omitempty"`
	// FirstStepAt is when a rank applied its first step (unix ns, 0: not yet);
	// RecoveryNanos the time from the previous generation's end to it (0 for the
	// first generation).
	FirstStepAt   int64 `json:"first_step_at,omitempty"`
	RecoveryNanos int64 `json:"recovery_ns,omitempty"`
}

// State is the whole replicated state. It is plain data: State.Apply changes it and
// nothing else does.
type State struct {
	Job         *JobSpec               `json:"job,omitempty"`
	Images      map[string]*Image      `json:"images"`
	Tasks       map[string]*MaskTask   `json:"tasks"`
	Workers     map[string]*WorkerInfo `json:"workers"`
	Voters      map[string]*Voter      `json:"voters"`
	Generations []Generation           `json:"generations,omitempty"`
	// Registry holds the committed checkpoints (registry.go).
	Registry Registry `json:"registry"`
	// Dataset is the job's registered packed dataset (dataset.go).
	Dataset Dataset `json:"dataset"`
	// Counts of tasks per state, kept in step with Tasks.
	Counts map[TaskState]int `json:"-"`
	// Duplicates counts every ignored repeat report.
	Duplicates int `json:"duplicates"`
	// Index is the raft index of the last applied command.
	Index uint64 `json:"index"`
	// bySeq maps a JetStream sequence to its task id (derived; rebuilt on restore).
	bySeq map[uint64]string
}

// NewState returns an empty state.
func NewState() *State {
	return &State{
		Images:  map[string]*Image{},
		Tasks:   map[string]*MaskTask{},
		Workers: map[string]*WorkerInfo{},
		Voters:  map[string]*Voter{},
		Counts:  map[TaskState]int{},
		bySeq:   map[uint64]string{},
	}
}

// TaskBySeq returns the task whose message has JetStream sequence seq.
func (s *State) TaskBySeq(seq uint64) (*MaskTask, bool) {
	id, ok := s.bySeq[seq]
	if !ok {
		return nil, false
	}
	t, ok := s.Tasks[id]
	return t, ok
}

// TaskIDs returns the task ids in sorted order (deterministic iteration).
func (s *State) TaskIDs() []string {
	ids := make([]string, 0, len(s.Tasks))
	for id := range s.Tasks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Clone returns a deep copy of s (for snapshots taken while Apply goes on).
func (s *State) Clone() *State {
	c := NewState()
	if s.Job != nil {
		j := *s.Job
		c.Job = &j
	}
	for k, v := range s.Images {
		x := *v
		c.Images[k] = &x
	}
	for k, v := range s.Tasks {
		x := *v
		c.Tasks[k] = &x
	}
	for k, v := range s.Workers {
		x := *v
		x.Roles = append([]string(nil), v.Roles...)
		c.Workers[k] = &x
	}
	for k, v := range s.Voters {
		x := *v
		c.Voters[k] = &x
	}
	for _, g := range s.Generations {
		c.Generations = append(c.Generations, g.clone())
	}
	c.Registry = s.Registry.clone()
	c.Dataset = s.Dataset.clone()
	for k, v := range s.Counts {
		c.Counts[k] = v
	}
	for k, v := range s.bySeq {
		c.bySeq[k] = v
	}
	c.Duplicates = s.Duplicates
	c.Index = s.Index
	return c
}

// rebuild recomputes the derived fields after a restore.
func (s *State) rebuild() {
	if s.Images == nil {
		s.Images = map[string]*Image{}
	}
	if s.Tasks == nil {
		s.Tasks = map[string]*MaskTask{}
	}
	if s.Workers == nil {
		s.Workers = map[string]*WorkerInfo{}
	}
	if s.Voters == nil {
		s.Voters = map[string]*Voter{}
	}
	s.Counts = map[TaskState]int{}
	s.bySeq = map[uint64]string{}
	for id, t := range s.Tasks {
		s.Counts[t.State]++
		if t.Seq != 0 {
			s.bySeq[t.Seq] = id
		}
	}
}

func (s *State) setState(t *MaskTask, st TaskState) {
	s.Counts[t.State]--
	t.State = st
	s.Counts[st]++
}
