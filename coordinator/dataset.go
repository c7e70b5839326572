package coordinator

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// The job's packed dataset in the state machine. A manifest is registered only
// after its JSON and every shard it lists are in the data bucket (the leader checks
// before proposing: upload, then commit), so workers take the manifest's digest
// from here, not from the bucket, and verify the manifest and every shard against
// it.

// CmdDataRegister registers the job's packed dataset manifest (once; a repeat is a
// duplicate; another manifest only with Replace).
const CmdDataRegister Kind = "data.register"

// DataRegistration is a manifest to register and whether it may replace the
// registered one.
type DataRegistration struct {
	Manifest natsutil.DataManifest `json:"manifest"`
	Replace  bool                  `json:"replace,omitempty"`
}

// Dataset is the job's registered packed dataset.
type Dataset struct {
	// Current is the registered manifest (nil: none yet).
	Current *natsutil.DataManifest `json:"current,omitempty"`
	// LastSeq counts the registrations (Current.Seq is the latest).
	LastSeq uint64 `json:"last_seq,omitempty"`
}

func (d Dataset) clone() Dataset {
	if d.Current != nil {
		c := cloneDataManifest(*d.Current)
		d.Current = &c
	}
	return d
}

func cloneDataManifest(m natsutil.DataManifest) natsutil.DataManifest {
	m.Shards = slices.Clone(m.Shards)
	return m
}

// validDataManifest says what is wrong with a manifest to register ("" when
// nothing).
func validDataManifest(m natsutil.DataManifest) string {
	if !sha256Hex.MatchString(m.SHA256) || m.Bytes <= 0 {
		return fmt.Sprintf("dataset manifest has SHA-256 %q and size %d (want 64 lower-case hex digits and a size > 0)", m.SHA256, m.Bytes)
	}
	if len(m.Shards) == 0 {
		return fmt.Sprintf("dataset manifest %.12s lists no shards; pack a dataset with `samdiffsr data pack --out`", m.SHA256)
	}
	seen := map[string]bool{}
	for i, s := range m.Shards {
		if s.Name == "" || strings.ContainsAny(s.Name, `/\`) || strings.HasPrefix(s.Name, ".") {
			return fmt.Sprintf("dataset manifest %.12s: shard %d has name %q (want a plain file name)", m.SHA256, i, s.Name)
		}
		if seen[s.Name] {
			return fmt.Sprintf("dataset manifest %.12s lists shard %s twice", m.SHA256, s.Name)
		}
		seen[s.Name] = true
		if !sha256Hex.MatchString(s.SHA256) || s.Bytes <= 0 {
			return fmt.Sprintf("dataset manifest %.12s: shard %s has SHA-256 %q and size %d (want 64 lower-case hex digits and a size > 0)", m.SHA256, s.Name, s.SHA256, s.Bytes)
		}
	}
	if m.Images < 0 || m.Tiles < 0 {
		return fmt.Sprintf("dataset manifest %.12s counts %d images and %d tiles", m.SHA256, m.Images, m.Tiles)
	}
	return ""
}

func (s *State) applyDataRegister(cmd Command) Result {
	r := cmd.DataRegister
	if r == nil {
		return rejected("dataset registration without payload")
	}
	if why := validDataManifest(r.Manifest); why != "" {
		return rejected("%s", why)
	}
	d := &s.Dataset
	if cur := d.Current; cur != nil {
		if cur.SHA256 == r.Manifest.SHA256 {
			return Result{Outcome: Duplicate, Seq: cur.Seq}
		}
		if !r.Replace {
			return rejected("job already trains on dataset manifest %s (%d shards, registration %d); push with --replace to replace it (workers that open the dataset afterwards train on the new one)",
				cur.SHA256, len(cur.Shards), cur.Seq)
		}
	}
	m := cloneDataManifest(r.Manifest)
	d.LastSeq++
	m.Seq = d.LastSeq
	m.Registered = time.Unix(0, cmd.At).UTC()
	d.Current = &m
	return Result{Outcome: OK, Seq: m.Seq}
}

// DataManifestOf answers a worker's request for the registered dataset.
func DataManifestOf(s *State) natsutil.DataManifestReply {
	if s.Dataset.Current == nil {
		return natsutil.DataManifestReply{}
	}
	m := cloneDataManifest(*s.Dataset.Current)
	return natsutil.DataManifestReply{Manifest: &m}
}

// BuildDatasetStatus is the registered dataset part of the status (nil: none).
func BuildDatasetStatus(s *State) *natsutil.DatasetStatus {
	m := s.Dataset.Current
	if m == nil {
		return nil
	}
	return &natsutil.DatasetStatus{SHA256: m.SHA256, Images: m.Images, Tiles: m.Tiles, Shards: len(m.Shards), Bytes: m.ShardBytes(),
		Seq: m.Seq, Registered: m.Registered}
}
