package dataset

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func loads(owner []int, sizes []int64, n int) []int64 {
	out := make([]int64, n)
	for p, w := range owner {
		out[w] += sizes[p]
	}
	return out
}

// movedBytes sums the sizes of partitions whose worker id differs.
func movedBytes(a []int, wa []string, b []int, wb []string, sizes []int64) int64 {
	var m int64
	for p := range sizes {
		if wa[a[p]] != wb[b[p]] {
			m += sizes[p]
		}
	}
	return m
}

// TestAssignBalancedStablePure: Assign balances bytes within its bound, does not
// depend on the order of the workers, and when a worker leaves or joins moves
// little more than it must (the leaver's bytes, or a joiner's share).
func TestAssignBalancedStablePure(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 20; trial++ {
		sizes := make([]int64, 64)
		var total, largest int64
		for i := range sizes {
			sizes[i] = 50_000_000 + rng.Int64N(250_000_000)
			total += sizes[i]
			largest = max(largest, sizes[i])
		}
		n := 2 + trial%5
		var workers []string
		for i := 0; i < n; i++ {
			workers = append(workers, fmt.Sprintf("w%02d-%d", i, rng.IntN(1000)))
		}
		a, err := Assign(workers, sizes)
		if err != nil {
			t.Fatal(err)
		}
		mean := float64(total) / float64(n)
		for w, l := range loads(a, sizes, n) {
			if float64(l) > max(mean*(1+assignSlack), mean+float64(largest)) {
				t.Fatalf("worker %d holds %d bytes, mean %.0f", w, l, mean)
			}
		}
		// Pure and independent of the order.
		rev := slices.Clone(workers)
		slices.Reverse(rev)
		b, _ := Assign(rev, sizes)
		if movedBytes(a, workers, b, rev, sizes) != 0 {
			t.Fatal("the assignment depends on the order of the workers")
		}
		// One leaves: its bytes move, and not much more.
		gone := rng.IntN(n)
		left := slices.Delete(slices.Clone(workers), gone, gone+1)
		c, _ := Assign(left, sizes)
		must := loads(a, sizes, n)[gone]
		if m := movedBytes(a, workers, c, left, sizes); float64(m) > 1.6*float64(must) {
			t.Errorf("trial %d: %d workers, one leaves: %d bytes moved, its own were %d", trial, n, m, must)
		}
		// One joins: it takes about its share, others keep theirs.
		joined := append(slices.Clone(workers), "new-worker")
		d, _ := Assign(joined, sizes)
		share := float64(total) / float64(n+1)
		if m := movedBytes(a, workers, d, joined, sizes); float64(m) > 1.6*share {
			t.Errorf("trial %d: %d workers, one joins: %d bytes moved, its share is %.0f", trial, n, m, share)
		}
	}
	if _, err := Assign([]string{"a", "a"}, []int64{1}); err == nil {
		t.Error("duplicate worker ids accepted")
	}
	if _, err := Assign(nil, []int64{1}); err == nil {
		t.Error("no workers accepted")
	}
}

func TestPartitions(t *testing.T) {
	m := &Manifest{Shards: make([]ManifestShard, 7)}
	for i := range m.Shards {
		m.Shards[i].RawBytes = int64(i + 1)
	}
	for _, tc := range []struct {
		v    int
		want int
	}{{3, 3}, {0, 7}, {20, 7}, {7, 7}, {1, 1}} {
		parts := Partitions(m, tc.v)
		if len(parts) != tc.want {
			t.Fatalf("v=%d: %d partitions, want %d", tc.v, len(parts), tc.want)
		}
		var all []int
		for _, p := range parts {
			if len(p) == 0 {
				t.Fatalf("v=%d: empty partition", tc.v)
			}
			all = append(all, p...)
		}
		if !slices.Equal(all, []int{0, 1, 2, 3, 4, 5, 6}) {
			t.Fatalf("v=%d: partitions %v do not cover the shards once, in order", tc.v, parts)
		}
		var sum int64
		for _, b := range PartitionBytes(m, parts) {
			sum += b
		}
		if sum != 28 {
			t.Fatalf("partition bytes sum to %d", sum)
		}
	}
}
