package natsutil

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// The packed dataset's wire messages (issue 13). The flow:
//
//   - `samdiffsr data push` uploads every shard to DataBucket under its manifest
//     name (nothing is sent for a shard stored with the same digest), then the
//     manifest's JSON under DataManifestObject(its SHA-256), and only then sends
//     DataRegister to Coord("data.register") (request/reply, answered with Reply:
//     Seq, Outcome "duplicate" when the job already has this manifest). The leader
//     reads the manifest back by its digest, checks that every shard it lists is in
//     the bucket as listed, and commits the DataManifest through raft: from then
//     on the FSM, not the bucket, says which dataset the job trains on.
//   - train workers and `samdiffsr data pull` send DataManifestRequest to
//     Coord("data.manifest") (any voter answers from its FSM), fetch the manifest
//     object by the registered digest and verify every shard against it, so a
//     manifest or shard changed in the bucket behind the coordinator's back is
//     refused.

// DataBucket is the Object Store bucket of the job's packed dataset: its shards
// under their manifest names and the manifests under DataManifestObject.
func (n Names) DataBucket() string { return "samdiffsr-data-" + n.Job }

// DataManifestObject is the object name of a pushed manifest whose JSON has
// SHA-256 sum (hex): content-addressed, so pushing another dataset never changes
// the one workers are reading.
func DataManifestObject(sum string) string { return "manifest/" + sum + ".json" }

// MaxDataManifestBytes bounds the manifest JSON a coordinator or worker reads
// (DF2K's is well under 1 MB).
const MaxDataManifestBytes = 64 << 20

// DataShard is one shard of a registered dataset: the packed file that travels.
type DataShard struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

// DataManifest is the packed dataset the coordinator registered for the job.
type DataManifest struct {
	// SHA256 and Bytes are the manifest JSON's digest and size (its object's).
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
	// Images and Tiles count the dataset's images and tiles.
	Images int `json:"images"`
	Tiles  int `json:"tiles"`
	// Shards are the manifest's shards in order.
	Shards []DataShard `json:"shards"`
	// Seq numbers the registrations of the job (1, 2, …: a replacement is the next).
	Seq uint64 `json:"seq,omitempty"`
	// Registered is when the leader committed it.
	Registered time.Time `json:"registered"`
}

// ShardBytes sums the shards' sizes.
func (m DataManifest) ShardBytes() int64 {
	var n int64
	for _, s := range m.Shards {
		n += s.Bytes
	}
	return n
}

// DecodeDataManifest reads what the coordinator records of a packed dataset's
// manifest JSON (dataset.Manifest as `data pack` writes it): the counts and each
// shard's name, packed SHA-256 and packed size; SHA256 and Bytes are the JSON's.
func DecodeDataManifest(js []byte) (DataManifest, error) {
	var m struct {
		Images int         `json:"images"`
		Tiles  int         `json:"tiles"`
		Shards []DataShard `json:"shards"`
	}
	if err := json.Unmarshal(js, &m); err != nil {
		return DataManifest{}, fmt.Errorf("natsutil: dataset manifest: %w", err)
	}
	sum := sha256.Sum256(js)
	return DataManifest{SHA256: hex.EncodeToString(sum[:]), Bytes: int64(len(js)), Images: m.Images, Tiles: m.Tiles, Shards: m.Shards}, nil
}

// DataRegister asks the leader to register the manifest whose JSON (SHA256,
// Bytes) is in the data bucket, with all its shards. Replace allows replacing
// another registered manifest (workers that open the dataset afterwards train on
// the new one).
type DataRegister struct {
	SHA256  string `json:"sha256"`
	Bytes   int64  `json:"bytes"`
	Replace bool   `json:"replace,omitempty"`
	// Client names who pushed (for the coordinator's log).
	Client string `json:"client,omitempty"`
}

// DataManifestRequest asks any voter for the job's registered dataset.
type DataManifestRequest struct{}

// DataManifestReply answers DataManifestRequest; Manifest is nil when none is
// registered.
type DataManifestReply struct {
	Manifest *DataManifest `json:"manifest,omitempty"`
	Err      string        `json:"err,omitempty"`
}

// DatasetStatus is the registered dataset in Status.
type DatasetStatus struct {
	SHA256 string `json:"sha256"`
	Images int    `json:"images"`
	Tiles  int    `json:"tiles"`
	Shards int    `json:"shards"`
	// Bytes sums the shards' packed sizes.
	Bytes      int64     `json:"bytes"`
	Seq        uint64    `json:"seq"`
	Registered time.Time `json:"registered"`
}
