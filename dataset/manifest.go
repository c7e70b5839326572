package dataset

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
)

// ManifestFile is the name of a packed dataset's manifest inside its folder; the
// shards lie beside it in ShardDir.
const (
	ManifestFile = "manifest.json"
	ShardDir     = "shards"
)

// Manifest lists a packed dataset: its shards in order (their tiles, in that order,
// are the dataset's tiles) with counts, sizes and digests, and the images left out.
type Manifest struct {
	Version       int  `json:"version"`
	TileSize      int  `json:"tile_size"`
	TileThreshold int  `json:"tile_threshold"`
	Scale         int  `json:"scale"`
	Labels        bool `json:"labels"`
	// Images and Tiles count the packed images and their tiles.
	Images int `json:"images"`
	Tiles  int `json:"tiles"`
	// Bytes and RawBytes sum the shards' packed and raw sizes; SourceBytes the
	// source files' (HR, LR and label-map files of the packed images).
	Bytes       int64           `json:"bytes"`
	RawBytes    int64           `json:"raw_bytes"`
	SourceBytes int64           `json:"source_bytes"`
	Shards      []ManifestShard `json:"shards"`
	// Skipped lists the images left out, by file, with why.
	Skipped []Problem `json:"skipped,omitempty"`
}

// ManifestShard is one shard of a manifest.
type ManifestShard struct {
	// Name is the shard's file name in ShardDir and its object name in the store.
	Name string `json:"name"`
	// Images are the shard's images in order; their tiles (TileGrid of each size
	// with the manifest's tiling) are the shard's, so every rank knows every tile's
	// geometry without holding the shard.
	Images []ManifestImage `json:"images"`
	Tiles  int             `json:"tiles"`
	// Bytes and SHA256 are the packed file's (what travels); RawBytes and RawSHA256
	// the raw file's a worker's shard cache holds.
	Bytes     int64  `json:"bytes"`
	SHA256    string `json:"sha256"`
	RawBytes  int64  `json:"raw_bytes"`
	RawSHA256 string `json:"raw_sha256"`
}

// ManifestImage is one packed image: its ID and HR size (cropped to a multiple of
// the scale).
type ManifestImage struct {
	ID string `json:"id"`
	W  int    `json:"w"`
	H  int    `json:"h"`
}

// Digest is the SHA-256 (hex) of the manifest's JSON: the packed dataset's identity.
func (m *Manifest) Digest() string {
	js, _ := json.Marshal(m) // plain data: cannot fail
	sum := sha256.Sum256(js)
	return hex.EncodeToString(sum[:])
}

// Check reports the first inconsistency of a manifest (a damaged or hand-edited
// file), naming it.
func (m *Manifest) Check() error {
	if m.Version != shardVersion || m.Scale != 4 || m.TileSize <= 0 {
		return fmt.Errorf("version %d, scale %d, tile size %d (want version %d, scale 4)", m.Version, m.Scale, m.TileSize, shardVersion)
	}
	seen := map[string]bool{}
	images, tiles := 0, 0
	for i, s := range m.Shards {
		if s.Name == "" || s.Name != filepath.Base(s.Name) || strings.HasPrefix(s.Name, ".") || seen[s.Name] {
			return fmt.Errorf("shard %d: name %q must be a unique plain file name", i, s.Name)
		}
		seen[s.Name] = true
		if !isSHA256(s.SHA256) || !isSHA256(s.RawSHA256) || s.Bytes <= 0 || s.RawBytes <= 0 || s.Tiles <= 0 {
			return fmt.Errorf("shard %s: sizes %d/%d, tiles %d or digests %q/%q invalid", s.Name, s.Bytes, s.RawBytes, s.Tiles, s.SHA256, s.RawSHA256)
		}
		n := 0
		for _, im := range s.Images {
			n += len(TileGrid(0, im.W, im.H, m.TileSize, m.TileThreshold))
		}
		if n != s.Tiles {
			return fmt.Errorf("shard %s: its images make %d tiles, it says %d", s.Name, n, s.Tiles)
		}
		images += len(s.Images)
		tiles += s.Tiles
	}
	if images != m.Images || tiles != m.Tiles {
		return fmt.Errorf("counts %d images / %d tiles, the shards hold %d / %d", m.Images, m.Tiles, images, tiles)
	}
	return nil
}

func isSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// ReadManifest reads and checks the manifest of the packed dataset in dir (or the
// manifest file itself).
func ReadManifest(path string) (*Manifest, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, ManifestFile)
	}
	js, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: manifest: %w (a packed dataset folder holds %s, written by `samdiffsr data pack --out`)", err, ManifestFile)
	}
	return ParseManifest(path, js)
}

// ParseManifest decodes and checks a manifest; name is used in errors.
func ParseManifest(name string, js []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, fmt.Errorf("dataset: manifest %s: %w", name, err)
	}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("dataset: manifest %s: %w; pack the dataset again", name, err)
	}
	return &m, nil
}

// WriteManifest writes m as dir/manifest.json, atomically.
func WriteManifest(dir string, m *Manifest) error {
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, ManifestFile), append(js, '\n'), 0o644)
}
