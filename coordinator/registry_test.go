package coordinator

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

func ckpt(stage string, step int64, psnr float64) natsutil.CheckpointInfo {
	c := natsutil.CheckpointInfo{ID: fmt.Sprintf("%s/step_%09d", stage, step), Stage: stage, Step: step,
		Files: []natsutil.CheckpointFile{{Name: "model.safetensors", SHA256: fmt.Sprintf("%064x", step*10+int64(len(stage))), Size: 100}}}
	if psnr > 0 {
		c.Metrics = map[string]float64{natsutil.MetricValPSNRY: psnr}
	}
	return c
}

func commit(t *testing.T, s *State, c natsutil.CheckpointInfo) Result {
	t.Helper()
	return s.Apply(s.Index+1, Command{Kind: CmdCkptCommit, At: 1e18, CkptCommit: &CheckpointCommit{Checkpoint: c}})
}

func ids(recs []natsutil.CheckpointInfo) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func TestRegistryCommitSeqDuplicateAndRefusals(t *testing.T) {
	s := NewState()
	a := ckpt("diffusion", 100, 0)
	if r := commit(t, s, a); r.Outcome != OK || r.Seq != 1 {
		t.Fatalf("first commit %+v", r)
	}
	if r := commit(t, s, a); r.Outcome != Duplicate || r.Seq != 1 {
		t.Fatalf("repeat commit %+v, want duplicate of seq 1", r)
	}
	changed := a
	changed.Files = []natsutil.CheckpointFile{{Name: "model.safetensors", SHA256: strings.Repeat("f", 64), Size: 1}}
	if r := commit(t, s, changed); r.Outcome != Rejected || !strings.Contains(r.Err, "already committed") {
		t.Fatalf("same ID, other files: %+v", r)
	}
	for _, bad := range []natsutil.CheckpointInfo{
		{ID: "x", Stage: "diffusion"},
		{ID: "x", Stage: "diffusion", Files: []natsutil.CheckpointFile{{Name: "../evil", SHA256: strings.Repeat("a", 64)}}},
		{ID: "x", Stage: "diffusion", Files: []natsutil.CheckpointFile{{Name: "m", SHA256: "abc"}}},
		{ID: "", Stage: "diffusion", Files: a.Files},
	} {
		if r := commit(t, s, bad); r.Outcome != Rejected || r.Err == "" {
			t.Errorf("invalid record %+v accepted: %+v", bad, r)
		}
	}
	if r := commit(t, s, ckpt("diffusion", 200, 0)); r.Seq != 2 {
		t.Fatalf("second record seq %d, want 2", r.Seq)
	}
	if s.Registry.Records[0].Created.IsZero() {
		t.Error("commit time not recorded")
	}
	// Snapshot round trip keeps the registry.
	data, err := EncodeState(s)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeState(data)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(back.Registry.Records), ids(s.Registry.Records)) || back.Registry.LastSeq != 2 {
		t.Fatalf("restored registry %+v", back.Registry)
	}
}

// TestRetentionKeepsLastEveryAndBest: with keep_last 3, keep_every 400 and
// keep_best, exactly those survive; the best resolves to the highest PSNR-Y.
func TestRetentionKeepsLastEveryAndBest(t *testing.T) {
	s := NewState()
	pol := natsutil.CheckpointRetention{KeepLast: 3, KeepEvery: 400, KeepBest: true}
	psnr := map[int64]float64{100: 20, 200: 21, 300: 25.5, 400: 22, 500: 23, 600: 24, 700: 23.5, 800: 22.5, 900: 21}
	for step := int64(100); step <= 900; step += 100 {
		if r := commit(t, s, ckpt("diffusion", step, psnr[step])); r.Outcome != OK {
			t.Fatal(r)
		}
		drop := Retain(s.Registry, pol)
		s.Apply(s.Index+1, Command{Kind: CmdCkptPrune, CkptPrune: drop})
	}
	// RRDB records are retained separately, by their own stage.
	for step := int64(10); step <= 50; step += 10 {
		commit(t, s, ckpt("rrdb", step, 30+float64(step)/100))
		s.Apply(s.Index+1, Command{Kind: CmdCkptPrune, CkptPrune: Retain(s.Registry, pol)})
	}
	var got []int64
	for _, r := range s.Registry.Records {
		if r.Stage == "diffusion" {
			got = append(got, r.Step)
		}
	}
	want := []int64{300, 400, 700, 800, 900} // best 300, every-400: 400, 800, last 3: 700-900
	if !slices.Equal(got, want) {
		t.Fatalf("kept diffusion steps %v, want %v", got, want)
	}
	al := Aliases(s.Registry)
	if al["best"] != "diffusion/step_000000300" || al["latest"] != "diffusion/step_000000900" {
		t.Errorf("aliases %v", al)
	}
	if al["best.rrdb"] != "rrdb/step_000000050" || al["latest.rrdb"] != "rrdb/step_000000050" {
		t.Errorf("rrdb aliases %v", al)
	}
	if s.Registry.Pruned != 4+2 {
		t.Errorf("pruned count %d, want 6", s.Registry.Pruned)
	}
	if s.Registry.LastSeq != 14 {
		t.Errorf("last seq %d", s.Registry.LastSeq)
	}
}

func TestRetentionKeepsTaggedAndNewest(t *testing.T) {
	s := NewState()
	pol := natsutil.CheckpointRetention{KeepLast: 1}
	commit(t, s, ckpt("diffusion", 1, 0))
	if r := s.Apply(s.Index+1, Command{Kind: CmdCkptTag, CkptTag: &CheckpointTag{Alias: "champion", ID: "diffusion/step_000000001"}}); r.Outcome != OK {
		t.Fatal(r)
	}
	commit(t, s, ckpt("diffusion", 2, 0))
	commit(t, s, ckpt("diffusion", 3, 0))
	drop := Retain(s.Registry, pol)
	if !slices.Equal(drop, []string{"diffusion/step_000000002"}) {
		t.Fatalf("drop %v", drop)
	}
	// A prune naming a tagged record (tag set after the decision) keeps it.
	s.Apply(s.Index+1, Command{Kind: CmdCkptPrune, CkptPrune: []string{"diffusion/step_000000001", "diffusion/step_000000002"}})
	if got := ids(s.Registry.Records); !slices.Equal(got, []string{"diffusion/step_000000001", "diffusion/step_000000003"}) {
		t.Fatalf("records %v", got)
	}
	if Aliases(s.Registry)["champion"] != "diffusion/step_000000001" {
		t.Error("user tag lost")
	}
	for _, bad := range []CheckpointTag{{Alias: "latest", ID: "diffusion/step_000000003"}, {Alias: "best.rrdb", ID: "diffusion/step_000000003"},
		{Alias: "x y", ID: "diffusion/step_000000003"}, {Alias: "ok", ID: "diffusion/step_000000002"}, {Alias: "nope", Remove: true}} {
		if r := s.Apply(s.Index+1, Command{Kind: CmdCkptTag, CkptTag: &bad}); r.Outcome != Rejected {
			t.Errorf("tag %+v accepted", bad)
		}
	}
	if Retain(s.Registry, natsutil.CheckpointRetention{}) != nil {
		t.Error("keep_last 0 must keep everything")
	}
}

func TestUnreferencedSharedObjectsStay(t *testing.T) {
	a, b := ckpt("diffusion", 1, 0), ckpt("diffusion", 2, 0)
	shared := natsutil.CheckpointFile{Name: "config.yaml", SHA256: strings.Repeat("c", 64), Size: 5}
	a.Files = append(a.Files, shared)
	b.Files = append(b.Files, shared)
	r := Registry{Records: []natsutil.CheckpointInfo{b}}
	got := Unreferenced(r, []natsutil.CheckpointInfo{a})
	if !slices.Equal(got, []string{natsutil.CheckpointObject(a.Files[0].SHA256)}) {
		t.Fatalf("unreferenced %v", got)
	}
}

func TestRegistryListAfterSeqAndLimit(t *testing.T) {
	s := NewState()
	for step := int64(1); step <= 5; step++ {
		commit(t, s, ckpt("diffusion", step, 0))
	}
	l := RegistryList(s, natsutil.CheckpointListRequest{AfterSeq: 2, Limit: 2})
	if len(l.Checkpoints) != 2 || l.Checkpoints[0].Seq != 3 || !l.More || l.LastSeq != 5 {
		t.Fatalf("list %+v", l)
	}
	if l := RegistryList(s, natsutil.CheckpointListRequest{Stage: "rrdb"}); len(l.Checkpoints) != 0 {
		t.Fatalf("stage filter %+v", l)
	}
	if st := BuildRegistryStatus(s); st == nil || st.Count != 5 || st.Latest.Step != 5 || st.Best != nil {
		t.Fatalf("status %+v", st)
	}
}
