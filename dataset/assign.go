package dataset

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
)

// Assignment of a packed dataset to the ranks of a generation.
//
// The manifest's shards fall in V partitions of consecutive shards (data.partitions;
// the "virtual shards"). Each generation gives every partition to one worker
// with Assign, a pure function of the workers' ids and the partitions' sizes:
// rendezvous (highest-random-weight) hashing, then a bounded-load repair. Every
// partition ranks the workers by a hash of (partition, worker) and goes to the
// first; workers above the bound then shed the partitions least attached to them
// to the next preferred worker with room. When the world changes, a partition
// whose preferred worker is still present mostly keeps it, so a lost worker's
// partitions move and few others do (tested: at most 1.6 times the lost worker's
// bytes, or a joiner's share); the bound keeps the bytes per worker balanced. The global batch of a step does not depend on the
// assignment (Sampler): only which rank computes which sample does.

// Partitions returns the shards of each of v partitions: partition p holds shards
// [p·S/v, (p+1)·S/v) of the manifest's S shards. v is capped at S (every partition
// holds at least one shard); v ≤ 0 means one partition per shard.
func Partitions(m *Manifest, v int) [][]int {
	s := len(m.Shards)
	if v <= 0 || v > s {
		v = s
	}
	out := make([][]int, v)
	for p := range out {
		for i := p * s / v; i < (p+1)*s/v; i++ {
			out[p] = append(out[p], i)
		}
	}
	return out
}

// PartitionBytes returns the raw bytes of every partition (what a worker caches).
func PartitionBytes(m *Manifest, parts [][]int) []int64 {
	out := make([]int64, len(parts))
	for p, shards := range parts {
		for _, i := range shards {
			out[p] += m.Shards[i].RawBytes
		}
	}
	return out
}

// assignSlack is the load bound of Assign over the mean, as a fraction.
const assignSlack = 0.10

// Assign gives each partition (by its size in bytes) to one of workers (distinct
// ids; the result indexes workers). No worker gets more than
// max((1+assignSlack)·mean, mean + the largest partition) bytes, and the result
// depends only on the set of ids and the sizes, not on the order of workers.
func Assign(workers []string, sizes []int64) ([]int, error) {
	if len(workers) == 0 {
		return nil, fmt.Errorf("dataset: assign %d partitions to no workers", len(sizes))
	}
	ids := slices.Clone(workers)
	slices.Sort(ids)
	if i := firstDuplicate(ids); i >= 0 {
		return nil, fmt.Errorf("dataset: worker %q appears twice", ids[i])
	}
	var total int64
	for _, s := range sizes {
		total += s
	}
	mean := float64(total) / float64(len(ids))
	bound := int64(mean * (1 + assignSlack))
	// Phase 1: every partition to its most preferred worker.
	prefs := make([][]int, len(sizes))
	owner := make([]int, len(sizes))
	load := make([]int64, len(ids))
	for p := range sizes {
		prefs[p] = preference(p, ids)
		owner[p] = prefs[p][0]
		load[owner[p]] += sizes[p]
	}
	// Phase 2: overloaded workers shed the partitions least attached to them
	// (lowest weight) to the next preferred worker with room, or to the least
	// loaded when that lowers the load.
	for moved := true; moved; {
		moved = false
		for w := range ids {
			if load[w] <= bound {
				continue
			}
			if p, to := shed(w, owner, prefs, sizes, load, bound, ids); p >= 0 {
				load[w] -= sizes[p]
				load[to] += sizes[p]
				owner[p] = to
				moved = true
			}
		}
	}
	// Map sorted ids back to the caller's order.
	pos := make(map[string]int, len(workers))
	for i, w := range workers {
		pos[w] = i
	}
	for p, w := range owner {
		owner[p] = pos[ids[w]]
	}
	return owner, nil
}

// preference orders workers for partition p by rendezvous weight, highest first.
func preference(p int, ids []string) []int {
	out := make([]int, len(ids))
	for w := range out {
		out[w] = w
	}
	slices.SortFunc(out, func(a, b int) int {
		return cmp.Or(cmp.Compare(hrw(p, ids[b]), hrw(p, ids[a])), cmp.Compare(a, b))
	})
	return out
}

// shed picks a partition overloaded worker w gives away and its receiver: among
// w's partitions from the least attached, the first that fits under bound at a
// worker it prefers next; else the least attached whose move to the least loaded
// worker lowers the larger of the two loads. p < 0: none.
func shed(w int, owner []int, prefs [][]int, sizes, load []int64, bound int64, ids []string) (p, to int) {
	var mine []int
	for q, o := range owner {
		if o == w {
			mine = append(mine, q)
		}
	}
	slices.SortFunc(mine, func(a, b int) int {
		return cmp.Or(cmp.Compare(hrw(a, ids[w]), hrw(b, ids[w])), cmp.Compare(a, b))
	})
	for _, q := range mine {
		for _, v := range prefs[q] {
			if v != w && load[v]+sizes[q] <= bound {
				return q, v
			}
		}
	}
	least := 0
	for v := range load {
		if load[v] < load[least] {
			least = v
		}
	}
	for _, q := range mine {
		if least != w && load[least]+sizes[q] < load[w] {
			return q, least
		}
	}
	return -1, -1
}

// hrw is the rendezvous weight of worker id for partition p.
func hrw(p int, id string) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d\x00%s", p, id)
	return splitmix64(h.Sum64())
}

func firstDuplicate(sorted []string) int {
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return i
		}
	}
	return -1
}

// TileOwners returns the rank computing each tile's samples: the rank (index in
// workers) its partition is assigned to.
func TileOwners(tileShard []int, parts [][]int, owner []int) []int {
	partOf := map[int]int{}
	for p, shards := range parts {
		for _, s := range shards {
			partOf[s] = p
		}
	}
	out := make([]int, len(tileShard))
	for i, s := range tileShard {
		out[i] = owner[partOf[s]]
	}
	return out
}
