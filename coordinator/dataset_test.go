package coordinator

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

func dataManifest(tag int, shards ...string) natsutil.DataManifest {
	m := natsutil.DataManifest{SHA256: fmt.Sprintf("%064x", tag), Bytes: 100, Images: 2, Tiles: 8}
	for i, s := range shards {
		m.Shards = append(m.Shards, natsutil.DataShard{Name: s, SHA256: fmt.Sprintf("%063x%d", tag, i%10), Bytes: int64(1000 + i)})
	}
	return m
}

func register(s *State, m natsutil.DataManifest, replace bool) Result {
	return s.Apply(s.Index+1, Command{Kind: CmdDataRegister, At: 2e18, DataRegister: &DataRegistration{Manifest: m, Replace: replace}})
}

func TestDataRegisterDuplicateReplaceAndRefusals(t *testing.T) {
	s := NewState()
	if got := DataManifestOf(s); got.Manifest != nil {
		t.Fatalf("empty state has a dataset: %+v", got)
	}
	a := dataManifest(1, "s0.sds", "s1.sds")
	if r := register(s, a, false); r.Outcome != OK || r.Seq != 1 {
		t.Fatalf("first registration %+v", r)
	}
	got := DataManifestOf(s).Manifest
	if got == nil || got.SHA256 != a.SHA256 || len(got.Shards) != 2 || got.Seq != 1 || got.Registered.UnixNano() != 2e18 {
		t.Fatalf("registered %+v", got)
	}
	got.Shards[0].SHA256 = "changed by a reader"
	if s.Dataset.Current.Shards[0].SHA256 == "changed by a reader" {
		t.Fatal("DataManifestOf shares the FSM's shard list")
	}
	if r := register(s, a, false); r.Outcome != Duplicate || r.Seq != 1 {
		t.Fatalf("repeat registration %+v, want duplicate of 1", r)
	}
	b := dataManifest(2, "t0.sds")
	if r := register(s, b, false); r.Outcome != Rejected || !strings.Contains(r.Err, a.SHA256) || !strings.Contains(r.Err, "--replace") {
		t.Fatalf("another manifest without replace: %+v", r)
	}
	if s.Dataset.Current.SHA256 != a.SHA256 {
		t.Fatal("a refused registration changed the dataset")
	}
	if r := register(s, b, true); r.Outcome != OK || r.Seq != 2 || s.Dataset.Current.SHA256 != b.SHA256 {
		t.Fatalf("replace: %+v, current %s", r, s.Dataset.Current.SHA256)
	}
	bad := []natsutil.DataManifest{
		{SHA256: "abc", Bytes: 1, Shards: a.Shards},
		{SHA256: a.SHA256, Bytes: 0, Shards: a.Shards},
		dataManifest(3),
		dataManifest(3, "../evil"),
		dataManifest(3, ".hidden"),
		dataManifest(3, "x.sds", "x.sds"),
		func() natsutil.DataManifest { m := dataManifest(3, "x.sds"); m.Shards[0].SHA256 = "ABC"; return m }(),
		func() natsutil.DataManifest { m := dataManifest(3, "x.sds"); m.Shards[0].Bytes = 0; return m }(),
		func() natsutil.DataManifest { m := dataManifest(3, "x.sds"); m.Tiles = -1; return m }(),
	}
	for _, m := range bad {
		if r := register(s, m, true); r.Outcome != Rejected || r.Err == "" {
			t.Errorf("invalid manifest %+v accepted: %+v", m, r)
		}
	}
	if r := s.Apply(s.Index+1, Command{Kind: CmdDataRegister}); r.Outcome != Rejected {
		t.Errorf("registration without payload: %+v", r)
	}
	if s.Dataset.LastSeq != 2 || s.Dataset.Current.SHA256 != b.SHA256 {
		t.Fatalf("refusals changed the dataset: %+v", s.Dataset)
	}
}

// TestDataRegisterSurvivesSnapshotAndClone: the registered dataset is part of the
// snapshot (a restarted voter answers with it) and of a clone (no shared slices).
func TestDataRegisterSurvivesSnapshotAndClone(t *testing.T) {
	s := NewState()
	a := dataManifest(7, "s0.sds", "s1.sds", "s2.sds")
	if r := register(s, a, false); r.Outcome != OK {
		t.Fatal(r)
	}
	c := s.Clone()
	c.Dataset.Current.Shards[1].Name = "other"
	if s.Dataset.Current.Shards[1].Name != "s1.sds" {
		t.Fatal("Clone shares the dataset's shards")
	}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	back := NewState()
	if err := json.Unmarshal(js, back); err != nil {
		t.Fatal(err)
	}
	back.rebuild()
	got := DataManifestOf(back).Manifest
	if got == nil || got.SHA256 != a.SHA256 || len(got.Shards) != 3 || back.Dataset.LastSeq != 1 {
		t.Fatalf("restored dataset %+v", back.Dataset)
	}
	if r := register(back, a, false); r.Outcome != Duplicate {
		t.Fatalf("restored voter does not know the manifest: %+v", r)
	}
	if st := BuildDatasetStatus(back); st == nil || st.SHA256 != a.SHA256 || st.Shards != 3 || st.Bytes != 1000+1001+1002 || st.Tiles != 8 || st.Seq != 1 {
		t.Fatalf("dataset status %+v", st)
	}
	if st := BuildDatasetStatus(NewState()); st != nil {
		t.Fatalf("dataset status without a dataset: %+v", st)
	}
}

func TestDecodeDataManifest(t *testing.T) {
	js := []byte(`{"version":1,"images":2,"tiles":8,"shards":[{"name":"a.sds","images":[{"id":"x","w":8,"h":8}],"tiles":8,"bytes":10,"sha256":"` + strings.Repeat("a", 64) + `","raw_bytes":20}]}`)
	m, err := natsutil.DecodeDataManifest(js)
	if err != nil || m.Images != 2 || m.Tiles != 8 || len(m.Shards) != 1 || m.Shards[0].Bytes != 10 || m.Bytes != int64(len(js)) || validDataManifest(m) != "" {
		t.Fatalf("decoded %+v, %v (%s)", m, err, validDataManifest(m))
	}
	if _, err := natsutil.DecodeDataManifest([]byte(`{"shards":`)); err == nil {
		t.Fatal("truncated manifest decoded")
	}
}
