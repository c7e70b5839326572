package dataset

import (
	"fmt"
	"slices"
	"sync"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

// ShardSet is a packed dataset as a TileSource: every tile of the manifest, in order
// (the Sampler's domain, the same on every rank whatever it holds), read from the
// shards attached to it. Reading a tile of a shard not attached is an error naming
// the shard. It is safe for concurrent reads; Attach and Close must not race them.
type ShardSet struct {
	m        *Manifest
	tiles    []Tile
	shardOf  []int // tile → shard
	first    []int // shard → its first tile
	firstImg []int // shard → its first image
	ids      []string
	masks    bool
	spe      maskgen.SPEOptions

	mu     sync.RWMutex
	shards []*Shard
}

// ShardSetOptions configure a ShardSet.
type ShardSetOptions struct {
	// Masks gives patches their E from the shards' labels (the manifest must have
	// them); SPE selects the mean and crop (its reduce rule is the Loader's).
	Masks bool
	SPE   maskgen.SPEOptions
}

// NewShardSet lays out the tiles of m; no shard is attached yet.
func NewShardSet(m *Manifest, o ShardSetOptions) (*ShardSet, error) {
	if o.Masks && !m.Labels {
		return nil, fmt.Errorf("dataset: the packed dataset has no label maps but the training needs masks; pack it with masks.dir set (`samdiffsr data pack --masks DIR`)")
	}
	s := &ShardSet{m: m, masks: o.Masks, spe: o.SPE, shards: make([]*Shard, len(m.Shards))}
	for i, sh := range m.Shards {
		s.first = append(s.first, len(s.tiles))
		s.firstImg = append(s.firstImg, len(s.ids))
		for _, im := range sh.Images {
			for _, t := range TileGrid(len(s.ids), im.W, im.H, m.TileSize, m.TileThreshold) {
				s.tiles = append(s.tiles, t)
				s.shardOf = append(s.shardOf, i)
			}
			s.ids = append(s.ids, im.ID)
		}
	}
	return s, nil
}

// Manifest returns the set's manifest.
func (s *ShardSet) Manifest() *Manifest { return s.m }

// AllTiles implements TileSource.
func (s *ShardSet) AllTiles() []Tile { return s.tiles }

// ImageID implements TileSource.
func (s *ShardSet) ImageID(img int) string { return s.ids[img] }

// TileShards returns the shard of every tile (indexes into the manifest's Shards).
func (s *ShardSet) TileShards() []int { return s.shardOf }

// Attach makes shard i readable from sh, after checking that sh holds exactly the
// manifest's images and tiles for it. A shard attached before is closed.
func (s *ShardSet) Attach(i int, sh *Shard) error {
	if i < 0 || i >= len(s.m.Shards) {
		return fmt.Errorf("dataset: shard %d of %d", i, len(s.m.Shards))
	}
	want := s.m.Shards[i]
	idx := sh.Index
	ok := len(idx.Images) == len(want.Images) && len(idx.Tiles) == want.Tiles && idx.TileSize == s.m.TileSize &&
		idx.TileThreshold == s.m.TileThreshold && idx.Labels == s.m.Labels
	for k := 0; ok && k < len(idx.Images); k++ {
		im := idx.Images[k]
		ok = im.ID == want.Images[k].ID && im.W == want.Images[k].W && im.H == want.Images[k].H
	}
	for k := 0; ok && k < len(idx.Tiles); k++ {
		t, g := idx.Tiles[k], s.tiles[s.first[i]+k]
		ok = t.Image+s.firstImg[i] == g.Image && t.X == g.X && t.Y == g.Y && t.W == g.W && t.H == g.H
	}
	if !ok {
		return damagedShard(sh.Path, fmt.Sprintf("its index does not match manifest shard %s", want.Name))
	}
	s.mu.Lock()
	old := s.shards[i]
	s.shards[i] = sh
	s.mu.Unlock()
	if old != nil && old != sh {
		old.Close()
	}
	return nil
}

// Detach closes and forgets shard i (it is no longer readable).
func (s *ShardSet) Detach(i int) {
	s.mu.Lock()
	old := s.shards[i]
	s.shards[i] = nil
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// Attached reports which shards are attached.
func (s *ShardSet) Attached() []bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]bool, len(s.shards))
	for i, sh := range s.shards {
		out[i] = sh != nil
	}
	return out
}

// Tile implements TileSource.
func (s *ShardSet) Tile(i int) (*TileView, error) {
	if i < 0 || i >= len(s.tiles) {
		return nil, fmt.Errorf("dataset: tile %d of %d", i, len(s.tiles))
	}
	si := s.shardOf[i]
	s.mu.RLock()
	sh := s.shards[si]
	s.mu.RUnlock()
	if sh == nil {
		return nil, fmt.Errorf("dataset: tile %d is in shard %s, which this worker does not hold", i, s.m.Shards[si].Name)
	}
	k := i - s.first[si]
	d, err := sh.tile(k)
	if err != nil {
		return nil, err
	}
	tv := &TileView{Tile: s.tiles[i], HR: d.hr, LR: d.lr}
	if s.masks {
		im := sh.Index.Images[sh.Index.Tiles[k].Image]
		tv.Labels, tv.Values, tv.Crop = d.labels, im.RegionValues, s.spe.Crop
		if s.spe.Mean == maskgen.MeanImage {
			tv.Values = im.ImageValues
		}
		if tv.Labels == nil || len(tv.Values) == 0 {
			return nil, damagedShard(sh.Path, fmt.Sprintf("tile %d has no labels or region values", k))
		}
	}
	return tv, nil
}

// Close closes every attached shard.
func (s *ShardSet) Close() error {
	s.mu.Lock()
	shards := slices.Clone(s.shards)
	clear(s.shards)
	s.mu.Unlock()
	var first error
	for _, sh := range shards {
		if sh != nil {
			if err := sh.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}
