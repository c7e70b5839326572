package natsutil

import (
	"strconv"
	"time"
)

// The wire messages of distributed training. Workers with the train role and the
// coordinator's leader exchange them; gradients never travel over NATS (they go rank
// to rank over the collective's TCP ring).
//
// Flow:
//   - a training worker that is not in a running generation sends TrainReady to
//     Coord("train.ready") (request/reply, answered with Reply) once at once and then
//     every heartbeat, saying where its collective listens and which (stage, step)
//     its in-memory state is at;
//   - the leader commits a generation through raft and puts its GenerationInfo under
//     TrainGenerationKey in the job's TrainBucket (JetStream KV); workers watch it;
//   - the ranks of a generation meet through the same bucket: each puts its live
//     address under RendezvousKey(generation, rank) and reads its peers';
//   - every rank publishes TrainProgress to Coord("train.progress") every second or so
//     (aggregated over the steps since the last one: no message per step);
//   - when a generation ends on a rank (boundary, stage end, or an error of the
//     collective), the rank sends TrainReady again with Generation set to the one it
//     left and Reason saying why. The leader ends the generation on the first such
//     report and forms the next from the workers that report back.

// Training stages as positions: a state at stage StageDiffusion is ahead of any
// state at StageRRDB.
const (
	TrainStageRRDB      = 0
	TrainStageDiffusion = 1
)

// TrainGenerationKey is the key of the current generation in TrainBucket.
const TrainGenerationKey = "generation"

// TrainBucket is the JetStream KV bucket of the job's training control plane.
func (n Names) TrainBucket() string { return "samdiffsr-train-" + n.Job }

// RendezvousKey is where rank puts its address for generation gen.
func RendezvousKey(gen, rank int) string {
	return "g" + strconv.Itoa(gen) + ".r" + strconv.Itoa(rank)
}

// TrainReady is a training worker waiting for a generation.
type TrainReady struct {
	Worker string `json:"worker"`
	Host   string `json:"host,omitempty"`
	// Addr is where its collective endpoint listens (HOST:PORT).
	Addr string `json:"addr"`
	// Stage and Step are the position of its in-memory state: Step steps of stage
	// Stage (TrainStageRRDB, TrainStageDiffusion) have been applied to it.
	Stage int   `json:"stage"`
	Step  int64 `json:"step"`
	// Generation is the generation it last ran in (0: none yet); Reason why it left
	// it: "boundary" (the generation's EndStep was reached), "stage" (the stage
	// ended), or the error that ended it.
	Generation int    `json:"generation,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Finished says the worker has trained every stage and wants no generation.
	Finished bool `json:"finished,omitempty"`
	// TrainHash is configs.Config.TrainHash of the worker's configuration: only
	// workers with the same one train together.
	TrainHash string `json:"train_hash,omitempty"`
}

// Reasons a rank leaves a generation, besides an error's text.
const (
	LeaveBoundary = "boundary"
	LeaveStage    = "stage"
	LeaveFinished = "finished"
)

// RankInfo is one rank of a generation.
type RankInfo struct {
	Worker string `json:"worker"`
	Host   string `json:"host,omitempty"`
	Addr   string `json:"addr"`
	// Stage and Step are where this rank's state was when the generation formed.
	Stage int   `json:"stage"`
	Step  int64 `json:"step"`
	// TrainHash is the rank's configs.Config.TrainHash (the same for every rank).
	TrainHash string `json:"train_hash,omitempty"`
}

// GenerationInfo is a committed generation as workers read it.
type GenerationInfo struct {
	Number int `json:"number"`
	// Ranks lists the world in rank order (rank 0 writes the run folder).
	Ranks []RankInfo `json:"ranks"`
	// Stage and StartStep are where every rank starts: the most advanced state any
	// rank holds. Source is a rank holding it; ranks whose state is elsewhere
	// receive it from Source before the first step.
	Stage     int   `json:"stage"`
	StartStep int64 `json:"start_step"`
	Source    int   `json:"source"`
	// EndStep, when > 0, is the step at which the generation ends so that waiting
	// workers can be admitted (cluster.train.admit_every); ranks also stop at the
	// end of the stage.
	EndStep int64 `json:"end_step,omitempty"`
	// Secret (hex) authenticates the ranks' collective connections.
	Secret string `json:"secret"`
	// Created is when the leader committed it.
	Created time.Time `json:"created"`
}

// TrainProgress is one rank's report over the steps since its last report.
type TrainProgress struct {
	Worker     string `json:"worker"`
	Generation int    `json:"generation"`
	Rank       int    `json:"rank"`
	Stage      int    `json:"stage"`
	// Step is the number of steps applied so far in the stage.
	Step int64 `json:"step"`
	// Steps is how many steps this report covers; StepsPerS their rate; ComputeS,
	// WaitS and ApplyS the mean seconds per step spent computing the gradient,
	// waiting in the collective and applying Adam; Bytes the bytes this rank sent
	// per step.
	Steps     int     `json:"steps"`
	StepsPerS float64 `json:"steps_per_s"`
	ComputeS  float64 `json:"compute_s"`
	WaitS     float64 `json:"wait_s"`
	ApplyS    float64 `json:"apply_s"`
	Bytes     int64   `json:"bytes"`
	Loss      float64 `json:"loss"`
	// FirstStepAt is when this rank applied the generation's first step (set on
	// every report of the generation, zero before that step).
	FirstStepAt time.Time `json:"first_step_at,omitempty"`
	Time        time.Time `json:"time"`
	// Data is where this rank's packed-dataset shards stand (data.packed only).
	Data *DataPlacement `json:"data,omitempty"`
}

// DataPlacement is a rank's part of the packed dataset: the shards it holds for
// its generation and what its shard cache did since the worker opened the stage's
// dataset (counts, not per-report deltas).
type DataPlacement struct {
	// Shards is how many shards this rank holds (of Total) and Bytes their packed
	// size.
	Shards int   `json:"shards"`
	Total  int   `json:"total"`
	Bytes  int64 `json:"bytes"`
	// Hits are shards found intact in the local cache; Fetched those brought from
	// the store (BytesFetched transferred); Refetched those found damaged in the
	// cache and brought again; Evicted those removed for room; Prefetched those
	// brought in the background for a next generation.
	Hits         int   `json:"hits"`
	Fetched      int   `json:"fetched"`
	Refetched    int   `json:"refetched,omitempty"`
	Evicted      int   `json:"evicted,omitempty"`
	Prefetched   int   `json:"prefetched,omitempty"`
	BytesFetched int64 `json:"bytes_fetched"`
}

// TrainStatus is the training part of Status.
type TrainStatus struct {
	// Generation is the current (or last) generation; Active says it is running.
	Generation int  `json:"generation"`
	Active     bool `json:"active"`
	Stage      int  `json:"stage"`
	// Step is the highest step a rank reported.
	Step  int64        `json:"step"`
	Ranks []RankStatus `json:"ranks,omitempty"`
	// Slowest names the rank with the lowest step rate and how much slower than the
	// median rank it is (Factor = median rate / its rate), when the world has 2+ ranks.
	Slowest *SlowRank `json:"slowest,omitempty"`
	// Waiting lists workers ready for the next generation.
	Waiting []string `json:"waiting,omitempty"`
	// History lists the generations, oldest first.
	History []GenerationStatus `json:"history,omitempty"`
}

// RankStatus is one rank's latest report.
type RankStatus struct {
	Rank      int     `json:"rank"`
	Worker    string  `json:"worker"`
	Addr      string  `json:"addr"`
	Step      int64   `json:"step"`
	StepsPerS float64 `json:"steps_per_s"`
	ComputeS  float64 `json:"compute_s"`
	WaitS     float64 `json:"wait_s"`
	Bytes     int64   `json:"bytes"`
	LastSeen  string  `json:"last_seen"`
	// Data is the rank's packed-dataset placement (data.packed only).
	Data *DataPlacement `json:"data,omitempty"`
}

// SlowRank is the slowest rank of a generation.
type SlowRank struct {
	Rank   int     `json:"rank"`
	Worker string  `json:"worker"`
	Factor float64 `json:"factor"`
}

// GenerationStatus is one generation of the history.
type GenerationStatus struct {
	Number    int      `json:"number"`
	Workers   []string `json:"workers"`
	Stage     int      `json:"stage"`
	StartStep int64    `json:"start_step"`
	LastStep  int64    `json:"last_step"`
	Started   string   `json:"started"`
	Ended     string   `json:"ended,omitempty"`
	Reason    string   `json:"reason,omitempty"`
	// Lost lists the previous generation's workers this one went on without.
	Lost []string `json:"lost,omitempty"`
	// RecoveryS is the time from the previous generation's end to this one's first
	// applied step (0 while unknown).
	RecoveryS float64 `json:"recovery_s,omitempty"`
}
