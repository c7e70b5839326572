package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

func TestPrintTrain(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	st := natsutil.Status{Job: "j", Time: now, Train: &natsutil.TrainStatus{
		Generation: 3, Active: true, Stage: natsutil.TrainStageDiffusion, Step: 1240,
		Ranks: []natsutil.RankStatus{
			{Rank: 0, Worker: "worker-a", Addr: "10.0.0.1:7000", Step: 1240, StepsPerS: 3.3, ComputeS: 0.25, WaitS: 0.05, Bytes: 3 << 20, LastSeen: now.Add(-500 * time.Millisecond).Format(time.RFC3339Nano)},
			{Rank: 1, Worker: "worker-c", Addr: "10.0.0.3:7000", Step: 1240, StepsPerS: 3.2,
				Data: &natsutil.DataPlacement{Shards: 5, Total: 14, Bytes: 320 << 20, Hits: 4, Fetched: 1, BytesFetched: 64 << 20, Prefetched: 2}},
			{Rank: 2, Worker: "worker-b", Addr: "10.0.0.2:7000", Step: 1239, StepsPerS: 1.8},
		},
		Slowest: &natsutil.SlowRank{Rank: 2, Worker: "worker-b", Factor: 1.8},
		Waiting: []string{"worker-d"},
		History: []natsutil.GenerationStatus{
			{Number: 2, Workers: []string{"worker-a", "worker-b"}, Stage: 1, StartStep: 1000, LastStep: 1100, Started: "t2", Ended: "t3", Reason: "rank 1 (worker-b) silent for 15.0s", Lost: []string{"worker-x"}, RecoveryS: 4.2},
			{Number: 3, Workers: []string{"worker-a", "worker-c", "worker-b"}, Stage: 1, StartStep: 1100, LastStep: 1240, Started: "t4"},
		},
	}, Dataset: &natsutil.DatasetStatus{SHA256: "0123456789abcdef", Images: 800, Tiles: 9000, Shards: 14, Bytes: 896 << 20, Seq: 2, Registered: now}}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	for _, want := range []string{
		"generation 3 (active) stage diffusion step 1240 · 3 ranks · slowest: rank 2 worker-b 1.8x slower than the median",
		"waiting for the next generation: worker-d",
		"3.0MiB", "0.5s ago", "250ms",
		"silent for 15.0s", "4.2s", "worker-x", "running",
		"CACHE HITS", "5/14", "320.0MiB", "64.0MiB",
		"dataset manifest 0123456789ab: 800 images, 9000 tiles in 14 shards (896.0MiB), registration 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// TestPrintStatusMasksAndEmptyJob: failed images are not counted as done (the
// percentage says finished), and before a submit the header says no job is there
// instead of printing blank fields.
func TestPrintStatusMasksAndEmptyJob(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, natsutil.Status{Job: "j", Leader: "c1", Masks: natsutil.MaskStatus{Total: 5, Done: 3, Failed: 2}})
	out := b.String()
	if !strings.Contains(out, "3/5 done, 2 failed (100.0% finished)") || !strings.Contains(out, "no job submitted") {
		t.Fatalf("status:\n%s", out)
	}
}
