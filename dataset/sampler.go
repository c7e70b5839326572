package dataset

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
)

// Sampler chooses training patches. The patches of global step s are a pure function
// of (seed, s, batch size) and the tile list: every rank of a data-parallel job
// computes the same global batch and takes its share with RankSlice, so the set of
// patches a step trains on does not depend on the world size.
//
// Sample k (k = step·batchSize + j) belongs to epoch e = k / len(tiles); within an
// epoch tiles are visited in a pseudo-random permutation keyed by (seed, e), so each
// tile is used once per epoch as with the reference's shuffled DataLoader. The patch
// offset inside the tile is drawn from a generator keyed by (seed, k): the tile is
// first cropped to a multiple of 8 (h - h%8), then i = randint(0, h-size)//4·4 and
// likewise for the column (reference notes §5).
type Sampler struct {
	tiles []Tile
	size  int
}

// NewSampler prepares sampling of size x size HR patches from tiles. Every tile,
// once cropped to a multiple of 8, must hold a patch.
func NewSampler(tiles []Tile, size int) (*Sampler, error) {
	if len(tiles) == 0 {
		return nil, fmt.Errorf("dataset: no tiles to sample patches from (are the images smaller than data.tile_threshold?)")
	}
	if size <= 0 || size%8 != 0 {
		return nil, fmt.Errorf("dataset: patch size %d must be a positive multiple of 8 (data.patch_size)", size)
	}
	for i, t := range tiles {
		if t.W-t.W%8 < size || t.H-t.H%8 < size {
			return nil, fmt.Errorf("dataset: tile %d (%dx%d at %d,%d of image %d) is smaller than a %d patch once cropped to a multiple of 8; make data.tile_threshold >= data.patch_size",
				i, t.W, t.H, t.X, t.Y, t.Image, size)
		}
	}
	return &Sampler{tiles: tiles, size: size}, nil
}

// Tiles returns the tiles sampled from (do not modify).
func (s *Sampler) Tiles() []Tile { return s.tiles }

// PatchSize returns the HR patch side.
func (s *Sampler) PatchSize() int { return s.size }

// splitmix64 is a bijective 64-bit mixer (SplitMix64's finaliser).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// permute maps i in [0, n) to a pseudo-random position in [0, n), bijectively for a
// given key: a 4-round balanced Feistel network on the smallest even bit width
// covering n, with cycle walking back into [0, n).
func permute(i, n uint64, key uint64) uint64 {
	if n <= 1 {
		return 0
	}
	b := bits.Len64(n - 1)
	half := (b + 1) / 2
	mask := uint64(1)<<half - 1
	x := i
	for {
		l, r := x>>half, x&mask
		for round := uint64(0); round < 4; round++ {
			l, r = r, l^(splitmix64(r^key^(round<<56))&mask)
		}
		x = l<<half | r
		if x < n {
			return x
		}
	}
}

// GlobalBatch returns the batchSize patches of global step step.
func (s *Sampler) GlobalBatch(seed, step int64, batchSize int) []PatchRef {
	out := make([]PatchRef, batchSize)
	n := uint64(len(s.tiles))
	for j := range out {
		k := uint64(step)*uint64(batchSize) + uint64(j)
		epoch := k / n
		key := splitmix64(uint64(seed) ^ splitmix64(epoch^0x5eed))
		ti := int(permute(k%n, n, key))
		t := s.tiles[ti]
		rng := rand.New(rand.NewPCG(splitmix64(uint64(seed)), splitmix64(k^0xa11ce)))
		h, w := t.H-t.H%8, t.W-t.W%8
		y := rng.IntN(h-s.size+1) / 4 * 4
		x := rng.IntN(w-s.size+1) / 4 * 4
		out[j] = PatchRef{Tile: ti, X: x, Y: y}
	}
	return out
}

// RankSlice returns rank's contiguous share of a global batch split over world ranks:
// refs[rank·B/world : (rank+1)·B/world]. Shares differ by at most one sample when B is
// not a multiple of world; the union over ranks is always the whole global batch.
func RankSlice(refs []PatchRef, rank, world int) []PatchRef {
	lo, hi := RankRange(len(refs), rank, world)
	return refs[lo:hi]
}

// RankRange is the index range [lo, hi) of rank's share of a global batch of b samples.
func RankRange(b, rank, world int) (lo, hi int) {
	if world <= 0 || rank < 0 || rank >= world {
		return 0, 0
	}
	return b * rank / world, b * (rank + 1) / world
}
