package natsutil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// The wire messages between workers, CLI clients and the coordinator. They live here,
// below both, because worker and coordinator may not import each other.

// TaskMessage is the body of a mask task in the work-queue stream (task id = image id).
type TaskMessage struct {
	ID     string `json:"id"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// ImageEntry is one dataset manifest entry in a submit request.
type ImageEntry struct {
	ID     string `json:"id"`
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// SubmitRequest sets the job spec and adds manifest entries (sent in chunks below the
// NATS payload limit).
type SubmitRequest struct {
	Job        string        `json:"job"`
	ConfigHash string        `json:"config_hash"`
	MaxDeliver int           `json:"max_deliver"`
	LeaseTTL   time.Duration `json:"lease_ttl"`
	Images     []ImageEntry  `json:"images"`
}

// LeaseRequest tells the leader a worker is starting attempt Attempt of a task.
type LeaseRequest struct {
	TaskID  string `json:"id"`
	Worker  string `json:"worker"`
	Attempt int    `json:"attempt"`
}

// ReportRequest is a worker's result for one attempt: OK with the result's object key
// and digest, or a failure with its reason.
type ReportRequest struct {
	TaskID      string `json:"id"`
	Worker      string `json:"worker"`
	Attempt     int    `json:"attempt"`
	OK          bool   `json:"ok"`
	ImageSHA256 string `json:"image_sha256,omitempty"`
	Key         string `json:"key,omitempty"`
	Digest      string `json:"digest,omitempty"`
	Regions     int    `json:"regions,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Final       bool   `json:"final,omitempty"`
}

// HeartbeatMessage announces a live worker.
type HeartbeatMessage struct {
	Worker string   `json:"worker"`
	Roles  []string `json:"roles"`
	Host   string   `json:"host,omitempty"`
}

// MemberRequest asks the leader to add (or remove) a raft voter.
type MemberRequest struct {
	ID     string `json:"id"`
	Addr   string `json:"addr,omitempty"`
	Remove bool   `json:"remove,omitempty"`
}

// LedgerRequest asks for a page of the mask-task ledger, in task id order.
type LedgerRequest struct {
	// State filters by task state ("" = all).
	State string `json:"state,omitempty"`
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// LedgerEntry is one task of the ledger as clients see it.
type LedgerEntry struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Worker     string `json:"worker,omitempty"`
	Attempts   int    `json:"attempts"`
	Key        string `json:"key,omitempty"`
	Digest     string `json:"digest,omitempty"`
	Regions    int    `json:"regions,omitempty"`
	Reason     string `json:"reason,omitempty"`
	DoneIndex  uint64 `json:"done_index,omitempty"`
	Duplicates int    `json:"duplicates,omitempty"`
}

// LedgerPage is a page of the ledger; More says whether entries follow the last one.
type LedgerPage struct {
	Tasks []LedgerEntry `json:"tasks"`
	More  bool          `json:"more"`
}

// Reply answers a write request. Err is set when the request was not applied; Leader
// names the current leader when the receiver was not it (clients retry there).
type Reply struct {
	Outcome string `json:"outcome,omitempty"`
	State   string `json:"state,omitempty"`
	Added   int    `json:"added,omitempty"`
	Err     string `json:"err,omitempty"`
	Leader  string `json:"leader,omitempty"`
	// Retry says the error is transient (no leader, leadership changing).
	Retry bool `json:"retry,omitempty"`
	// Seq is a committed checkpoint's sequence number; Pruned the checkpoint IDs
	// retention removed after it (checkpoint registry).
	Seq    uint64   `json:"seq,omitempty"`
	Pruned []string `json:"pruned,omitempty"`
}

// Status is what `samdiffsr status` shows.
type Status struct {
	Node     string          `json:"node"`
	Leader   string          `json:"leader"`
	Term     uint64          `json:"term"`
	Index    uint64          `json:"index"`
	Voters   []VoterStatus   `json:"voters"`
	Job      string          `json:"job,omitempty"`
	Config   string          `json:"config_hash,omitempty"`
	Masks    MaskStatus      `json:"masks"`
	Workers  []WorkerStatus  `json:"workers"`
	Failures []FailureStatus `json:"failures,omitempty"`
	Train    *TrainStatus    `json:"train,omitempty"`
	Registry *RegistryStatus `json:"registry,omitempty"`
	Dataset  *DatasetStatus  `json:"dataset,omitempty"`
	Time     time.Time       `json:"time"`
}

// VoterStatus is one raft voter.
type VoterStatus struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Suffrage string `json:"suffrage"`
}

// MaskStatus is the mask farm's progress.
type MaskStatus struct {
	Total      int     `json:"total"`
	Pending    int     `json:"pending"`
	Leased     int     `json:"leased"`
	Done       int     `json:"done"`
	Failed     int     `json:"failed"`
	Duplicates int     `json:"duplicates"`
	Rate       float64 `json:"images_per_s"`
	ETA        string  `json:"eta,omitempty"`
}

// WorkerStatus is one worker of the registry.
type WorkerStatus struct {
	ID       string   `json:"id"`
	Roles    []string `json:"roles"`
	Alive    bool     `json:"alive"`
	Done     int      `json:"done"`
	Failed   int      `json:"failed"`
	Rate     float64  `json:"tasks_per_s"`
	LastSeen string   `json:"last_seen"`
}

// FailureStatus is one failed image and why.
type FailureStatus struct {
	ID       string `json:"id"`
	Attempts int    `json:"attempts"`
	Reason   string `json:"reason"`
}

// ErrRemote is wrapped by Request when the coordinator answered with an error.
var ErrRemote = errors.New("coordinator refused")

// Request sends req as JSON to subj and decodes the JSON answer into resp, waiting up to
// timeout (bounded by ctx).
func Request(ctx context.Context, nc *nats.Conn, subj string, req, resp any, timeout time.Duration) error {
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("natsutil: encode request to %s: %w", subj, err)
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, subj, data)
	if err != nil {
		return fmt.Errorf("natsutil: request %s: %w", subj, err)
	}
	if err := json.Unmarshal(msg.Data, resp); err != nil {
		return fmt.Errorf("natsutil: decode answer from %s: %w", subj, err)
	}
	return nil
}

// RequestLeader sends a write request and retries (until ctx ends) while no leader
// answers or leadership is changing. A definite refusal is returned wrapped in ErrRemote.
func RequestLeader(ctx context.Context, nc *nats.Conn, subj string, req any, timeout time.Duration) (Reply, error) {
	wait := 50 * time.Millisecond
	for {
		var rep Reply
		err := Request(ctx, nc, subj, req, &rep, timeout)
		if err == nil && rep.Err == "" {
			return rep, nil
		}
		if err == nil && !rep.Retry {
			return rep, fmt.Errorf("%w: %s", ErrRemote, rep.Err)
		}
		if ctx.Err() != nil {
			if err == nil {
				err = errors.New(rep.Err)
			}
			return rep, fmt.Errorf("natsutil: %s: gave up: %w", subj, errors.Join(ctx.Err(), err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
