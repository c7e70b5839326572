package natsutil

import "time"

// The checkpoint registry's wire messages. The flow:
//
//   - the writer rank saves a checkpoint folder as always, then uploads each of its
//     files to the job's CheckpointBucket under the object name
//     CheckpointObject(sha256) (content-addressed: identical files are stored once,
//     and an object never changes once written), and only then sends
//     CheckpointPublish to Coord("checkpoints.publish") (request/reply, answered
//     with Reply: Seq, Outcome "duplicate" for a repeat, Pruned). The leader commits the record through raft: from then on, and
//     not before, consumers see it.
//   - consumers send CheckpointListRequest to Coord("checkpoints.list") (any voter
//     answers from its FSM) and get CheckpointList: records after a sequence
//     number, in commit order, with the aliases.
//   - `samdiffsr checkpoints tag` sends CheckpointTag to Coord("checkpoints.tag").
//   - after each commit the leader publishes the record on
//     Coord("checkpoints.committed"), so watchers wake at once (they also poll, and
//     resume by sequence number, so a missed notice costs only latency).
//   - retention: after each commit the leader decides (a pure function of the
//     records and the policy) which records to prune, commits their removal, and
//     only then deletes the objects no remaining record references.

// CheckpointBucket is the Object Store bucket of the job's checkpoint files.
func (n Names) CheckpointBucket() string { return "samdiffsr-ckpt-" + n.Job }

// CheckpointObject is the object name of a file with this SHA-256 (hex).
func CheckpointObject(sha256 string) string { return "sha256/" + sha256 }

// CheckpointFile is one file of a checkpoint folder.
type CheckpointFile struct {
	// Name is the file's name inside the checkpoint folder (model.safetensors, …).
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// CheckpointInfo is one committed checkpoint of the registry.
type CheckpointInfo struct {
	// ID is "<stage>/<folder name>", e.g. "diffusion/step_000000400"; unique in a job.
	ID         string             `json:"id"`
	Stage      string             `json:"stage"`
	Step       int64              `json:"step"`
	ConfigHash string             `json:"config_hash"`
	Files      []CheckpointFile   `json:"files"`
	Metrics    map[string]float64 `json:"metrics,omitempty"`
	Created    time.Time          `json:"created"`
	// Seq numbers the records in commit order (1, 2, …; never reused), so a
	// watcher resumes after the last one it saw.
	Seq uint64 `json:"seq"`
}

// CheckpointPublish asks the leader to commit a checkpoint whose files are all in
// the bucket. Seq is ignored (the FSM assigns it). Retention is the writer's policy;
// the leader applies the latest one it committed.
type CheckpointPublish struct {
	Checkpoint CheckpointInfo      `json:"checkpoint"`
	Retention  CheckpointRetention `json:"retention"`
	Worker     string              `json:"worker,omitempty"`
}

// CheckpointRetention is the registry's retention policy, per stage: the newest
// KeepLast checkpoints (0: all), every one whose step is a multiple of KeepEvery
// (0: none), and the best by val_psnr_y when KeepBest. The newest checkpoint and
// the ones a user tagged are always kept.
type CheckpointRetention struct {
	KeepLast  int  `json:"keep_last"`
	KeepEvery int  `json:"keep_every,omitempty"`
	KeepBest  bool `json:"keep_best,omitempty"`
}

// MetricValPSNRY is the metric the "best" alias and retention rank by.
const MetricValPSNRY = "val_psnr_y"

// CheckpointListRequest asks for the records committed after AfterSeq (0: all),
// optionally of one stage, at most Limit (0: all).
type CheckpointListRequest struct {
	AfterSeq uint64 `json:"after_seq,omitempty"`
	Stage    string `json:"stage,omitempty"`
	Limit    int    `json:"limit,omitempty"`
}

// CheckpointList answers CheckpointListRequest.
type CheckpointList struct {
	Checkpoints []CheckpointInfo `json:"checkpoints"`
	// Aliases maps an alias to a checkpoint ID: "latest" (the newest commit of the
	// last stage that has any), "best" (the highest val_psnr_y), and user tags.
	Aliases map[string]string `json:"aliases,omitempty"`
	// LastSeq is the highest Seq ever assigned (pruned records included).
	LastSeq uint64 `json:"last_seq"`
	// More says records after the last returned one exist (Limit reached).
	More bool   `json:"more,omitempty"`
	Err  string `json:"err,omitempty"`
}

// CheckpointTag sets (or, with Remove, deletes) a user alias. "latest" and "best"
// are computed and cannot be set.
type CheckpointTag struct {
	Alias  string `json:"alias"`
	ID     string `json:"id,omitempty"`
	Remove bool   `json:"remove,omitempty"`
}

// RegistryStatus is the registry part of Status.
type RegistryStatus struct {
	Count  int             `json:"count"`
	Latest *CheckpointInfo `json:"latest,omitempty"`
	Best   *CheckpointInfo `json:"best,omitempty"`
}
