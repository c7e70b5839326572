package coordinator

import (
	"encoding/json"
	"fmt"
)

// Kind names a command type.
type Kind string

// Command kinds.
const (
	// CmdSetJob sets (or confirms) the job spec.
	CmdSetJob Kind = "set_job"
	// CmdAddImages adds manifest entries and a pending mask task for each new image.
	CmdAddImages Kind = "add_images"
	// CmdPublished records the JetStream sequence of published task messages.
	CmdPublished Kind = "published"
	// CmdLease records that a worker started an attempt of a task.
	CmdLease Kind = "lease"
	// CmdDone commits a task's result (once; repeats are counted and ignored).
	CmdDone Kind = "done"
	// CmdFail records a failed attempt (final after MaxDeliver attempts).
	CmdFail Kind = "fail"
	// CmdExpire returns expired leases to pending (or fails them on the last attempt).
	CmdExpire Kind = "expire"
	// CmdHeartbeat registers a worker or refreshes its liveness.
	CmdHeartbeat Kind = "heartbeat"
	// CmdMember records a voter added to or removed from the raft configuration.
	CmdMember Kind = "member"
	// CmdBatch applies several commands as one raft entry (one fsync for many updates).
	CmdBatch Kind = "batch"
)

// Command is one typed change to the State. Exactly the payload matching Kind is set.
// At is the leader's clock (unix nanoseconds) when it proposed the command; Apply
// never reads a clock of its own.
type Command struct {
	Kind      Kind       `json:"k"`
	At        int64      `json:"at,omitempty"`
	SetJob    *JobSpec   `json:"job,omitempty"`
	Images    []Image    `json:"images,omitempty"`
	Published []Publish  `json:"published,omitempty"`
	Lease     *Lease     `json:"lease,omitempty"`
	Done      *Done      `json:"done,omitempty"`
	Fail      *Fail      `json:"fail,omitempty"`
	Expire    []string   `json:"expire,omitempty"`
	Heartbeat *Heartbeat `json:"heartbeat,omitempty"`
	Member    *Member    `json:"member,omitempty"`
	Batch     []Command  `json:"batch,omitempty"`
	// Training generations (generation.go).
	GenCommit    *GenerationCommit    `json:"gen_commit,omitempty"`
	GenEnd       *GenerationEnd       `json:"gen_end,omitempty"`
	GenFirstStep *GenerationFirstStep `json:"gen_first_step,omitempty"`
	// The checkpoint registry (registry.go).
	CkptCommit *CheckpointCommit `json:"ckpt_commit,omitempty"`
	CkptPrune  []string          `json:"ckpt_prune,omitempty"`
	CkptTag    *CheckpointTag    `json:"ckpt_tag,omitempty"`
	// The packed dataset (dataset.go).
	DataRegister *DataRegistration `json:"data_register,omitempty"`
}

// Publish records that task TaskID's message was stored at stream sequence Seq by its
// Publishes-th publication.
type Publish struct {
	TaskID    string `json:"id"`
	Seq       uint64 `json:"seq"`
	Publishes int    `json:"n"`
}

// Lease is a worker starting attempt Attempt (JetStream's delivery count) of a task.
type Lease struct {
	TaskID  string `json:"id"`
	Worker  string `json:"worker"`
	Attempt int    `json:"attempt"`
}

// Done is a worker's successful result for a task.
type Done struct {
	TaskID  string `json:"id"`
	Worker  string `json:"worker"`
	Attempt int    `json:"attempt"`
	// ImageSHA256 is the digest of the image the worker read (checked against the manifest).
	ImageSHA256 string `json:"image_sha256"`
	ResultKey   string `json:"key"`
	Digest      string `json:"digest"`
	Regions     int    `json:"regions"`
}

// Fail is a failed attempt of a task. Worker is empty when no worker reported it
// (JetStream gave up on the message).
type Fail struct {
	TaskID  string `json:"id"`
	Worker  string `json:"worker"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason"`
	// Final marks the task failed for good regardless of attempts left.
	Final bool `json:"final,omitempty"`
}

// Heartbeat announces a live worker.
type Heartbeat struct {
	Worker string   `json:"worker"`
	Roles  []string `json:"roles"`
	Host   string   `json:"host,omitempty"`
}

// Member is a voter added (or removed, when Remove) to the raft configuration.
type Member struct {
	ID     string `json:"id"`
	Addr   string `json:"addr,omitempty"`
	Remove bool   `json:"remove,omitempty"`
}

// Outcome says what a command did.
type Outcome string

// Outcomes.
const (
	// OK: the command changed the state as asked.
	OK Outcome = "ok"
	// Skip: the task is already final; the worker should drop its message unprocessed.
	Skip Outcome = "skip"
	// Duplicate: a repeat of an already committed result, recognised and ignored.
	Duplicate Outcome = "duplicate"
	// Rejected: the command was invalid for the state (Err says why).
	Rejected Outcome = "rejected"
)

// Result is the outcome of applying one command.
type Result struct {
	Outcome Outcome `json:"outcome"`
	Err     string  `json:"err,omitempty"`
	// Added counts new images (CmdAddImages).
	Added int `json:"added,omitempty"`
	// State is the task's state after the command (task commands).
	State TaskState `json:"state,omitempty"`
	// Seq is the sequence number a committed checkpoint got (CmdCkptCommit) or a
	// registered dataset manifest got (CmdDataRegister).
	Seq uint64 `json:"seq,omitempty"`
	// Batch holds one result per command of a CmdBatch.
	Batch []Result `json:"batch,omitempty"`
}

// Encode serialises a command for the raft log.
func (c Command) Encode() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("coordinator: encode %s command: %w", c.Kind, err)
	}
	return b, nil
}

// DecodeCommand parses a command from the raft log.
func DecodeCommand(data []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("coordinator: decode command: %w", err)
	}
	return c, nil
}

func rejected(format string, args ...any) Result {
	return Result{Outcome: Rejected, Err: fmt.Sprintf(format, args...)}
}

// Apply applies cmd, committed at raft index index, and returns its result. It is
// deterministic: the same commands in the same order give the same state on every voter.
func (s *State) Apply(index uint64, cmd Command) Result {
	if index > s.Index {
		s.Index = index
	}
	switch cmd.Kind {
	case CmdBatch:
		res := Result{Outcome: OK, Batch: make([]Result, len(cmd.Batch))}
		for i, c := range cmd.Batch {
			if c.At == 0 {
				c.At = cmd.At
			}
			res.Batch[i] = s.Apply(index, c)
		}
		return res
	case CmdSetJob:
		return s.applySetJob(cmd)
	case CmdAddImages:
		return s.applyAddImages(cmd)
	case CmdPublished:
		for _, p := range cmd.Published {
			t, ok := s.Tasks[p.TaskID]
			if !ok || p.Publishes < t.Publishes {
				continue
			}
			if t.Seq != 0 {
				delete(s.bySeq, t.Seq)
			}
			t.Seq, t.Publishes = p.Seq, p.Publishes
			if p.Seq != 0 {
				s.bySeq[p.Seq] = t.ID
			}
		}
		return Result{Outcome: OK}
	case CmdLease:
		return s.applyLease(cmd)
	case CmdDone:
		return s.applyDone(index, cmd)
	case CmdFail:
		return s.applyFail(index, cmd)
	case CmdExpire:
		for _, id := range cmd.Expire {
			t, ok := s.Tasks[id]
			if !ok || t.State != TaskLeased || t.LeaseUntil > cmd.At {
				continue
			}
			if s.Job != nil && t.Attempts >= s.Job.MaxDeliver {
				t.Reason = fmt.Sprintf("lease of attempt %d of %d expired: worker %s was lost or too slow", t.Attempts, s.Job.MaxDeliver, t.Worker) + lastReason(t.Reason)
				s.finish(t, TaskFailed, index, cmd.At)
				continue
			}
			s.setState(t, TaskPending)
			t.LeaseUntil = 0
		}
		return Result{Outcome: OK}
	case CmdHeartbeat:
		h := cmd.Heartbeat
		if h == nil || h.Worker == "" {
			return rejected("heartbeat without a worker id")
		}
		w := s.worker(h.Worker, cmd.At)
		w.Roles = append([]string(nil), h.Roles...)
		w.Host = h.Host
		return Result{Outcome: OK}
	case CmdMember:
		m := cmd.Member
		if m == nil || m.ID == "" {
			return rejected("membership command without a voter id")
		}
		if m.Remove {
			delete(s.Voters, m.ID)
		} else {
			s.Voters[m.ID] = &Voter{ID: m.ID, Addr: m.Addr}
		}
		return Result{Outcome: OK}
	case CmdGenCommit:
		return s.applyGenCommit(cmd)
	case CmdGenEnd:
		return s.applyGenEnd(cmd)
	case CmdGenFirstStep:
		return s.applyGenFirstStep(cmd)
	case CmdCkptCommit:
		return s.applyCkptCommit(cmd)
	case CmdCkptPrune:
		return s.applyCkptPrune(cmd)
	case CmdCkptTag:
		return s.applyCkptTag(cmd)
	case CmdDataRegister:
		return s.applyDataRegister(cmd)
	default:
		return rejected("unknown command kind %q", cmd.Kind)
	}
}

func lastReason(r string) string {
	if r == "" {
		return ""
	}
	return " (last error: " + r + ")"
}

func (s *State) applySetJob(cmd Command) Result {
	j := cmd.SetJob
	if j == nil || j.Name == "" {
		return rejected("set_job without a job name")
	}
	if j.MaxDeliver < 1 {
		return rejected("job %s: max_deliver %d must be >= 1", j.Name, j.MaxDeliver)
	}
	if s.Job != nil {
		if s.Job.Name != j.Name || s.Job.ConfigHash != j.ConfigHash {
			return rejected("coordinator already runs job %s with config hash %.12s; submit the same configuration, or start a new job (cluster.nats.job) with its own data dir", s.Job.Name, s.Job.ConfigHash)
		}
		s.Job.MaxDeliver, s.Job.LeaseTTLNanos = j.MaxDeliver, j.LeaseTTLNanos
		return Result{Outcome: OK}
	}
	nj := *j
	nj.SubmittedAt = cmd.At
	s.Job = &nj
	return Result{Outcome: OK}
}

func (s *State) applyAddImages(cmd Command) Result {
	if s.Job == nil {
		return rejected("add_images before set_job: submit the job spec first")
	}
	added := 0
	for _, im := range cmd.Images {
		if im.ID == "" {
			continue
		}
		if _, ok := s.Images[im.ID]; ok {
			continue
		}
		x := im
		s.Images[im.ID] = &x
		s.Tasks[im.ID] = &MaskTask{ID: im.ID, State: TaskPending}
		s.Counts[TaskPending]++
		added++
	}
	return Result{Outcome: OK, Added: added}
}

func (s *State) worker(id string, at int64) *WorkerInfo {
	w, ok := s.Workers[id]
	if !ok {
		w = &WorkerInfo{ID: id, FirstSeen: at}
		s.Workers[id] = w
	}
	if at > w.LastSeen {
		w.LastSeen = at
	}
	return w
}

func (s *State) applyLease(cmd Command) Result {
	l := cmd.Lease
	if l == nil {
		return rejected("lease without payload")
	}
	t, ok := s.Tasks[l.TaskID]
	if !ok {
		return rejected("no mask task %q in the ledger", l.TaskID)
	}
	if t.State.Final() {
		return Result{Outcome: Skip, State: t.State}
	}
	s.worker(l.Worker, cmd.At)
	s.setState(t, TaskLeased)
	t.Worker = l.Worker
	var ttl int64
	if s.Job != nil {
		ttl = s.Job.LeaseTTLNanos
	}
	t.LeaseUntil = cmd.At + ttl
	t.Attempts = max(t.Attempts, l.Attempt)
	return Result{Outcome: OK, State: t.State}
}

func (s *State) finish(t *MaskTask, st TaskState, index uint64, at int64) {
	s.setState(t, st)
	t.LeaseUntil = 0
	t.DoneIndex = index
	t.DoneAt = at
}

func (s *State) applyDone(index uint64, cmd Command) Result {
	d := cmd.Done
	if d == nil {
		return rejected("done without payload")
	}
	t, ok := s.Tasks[d.TaskID]
	if !ok {
		return rejected("no mask task %q in the ledger", d.TaskID)
	}
	if t.State == TaskDone {
		t.Duplicates++
		s.Duplicates++
		return Result{Outcome: Duplicate, State: t.State}
	}
	if im := s.Images[d.TaskID]; im != nil && im.SHA256 != "" && d.ImageSHA256 != "" && im.SHA256 != d.ImageSHA256 {
		t.Reason = fmt.Sprintf("image %s changed since it was submitted (sha256 %.12s, manifest %.12s); resubmit the dataset", im.Path, d.ImageSHA256, im.SHA256)
		t.Attempts = max(t.Attempts, d.Attempt)
		s.finish(t, TaskFailed, index, cmd.At)
		return Result{Outcome: Rejected, Err: t.Reason, State: t.State}
	}
	w := s.worker(d.Worker, cmd.At)
	w.Done++
	t.Worker = d.Worker
	t.Attempts = max(t.Attempts, d.Attempt)
	t.ResultKey, t.Digest, t.Regions = d.ResultKey, d.Digest, d.Regions
	t.Reason = ""
	s.finish(t, TaskDone, index, cmd.At)
	return Result{Outcome: OK, State: t.State}
}

func (s *State) applyFail(index uint64, cmd Command) Result {
	f := cmd.Fail
	if f == nil {
		return rejected("fail without payload")
	}
	t, ok := s.Tasks[f.TaskID]
	if !ok {
		return rejected("no mask task %q in the ledger", f.TaskID)
	}
	if t.State.Final() {
		t.Duplicates++
		s.Duplicates++
		return Result{Outcome: Duplicate, State: t.State}
	}
	if f.Worker != "" {
		s.worker(f.Worker, cmd.At).Failed++
		t.Worker = f.Worker
	}
	t.Attempts = max(t.Attempts, f.Attempt)
	t.Reason = f.Reason
	maxDeliver := 1
	if s.Job != nil {
		maxDeliver = s.Job.MaxDeliver
	}
	if f.Final || t.Attempts >= maxDeliver {
		if !f.Final {
			t.Reason = fmt.Sprintf("failed %d of %d attempts: %s", t.Attempts, maxDeliver, f.Reason)
		}
		s.finish(t, TaskFailed, index, cmd.At)
		return Result{Outcome: OK, State: t.State}
	}
	s.setState(t, TaskPending)
	t.LeaseUntil = 0
	return Result{Outcome: OK, State: t.State}
}
