package collective

import (
	"errors"
	"fmt"
	"time"
)

// Defaults for the zero fields of a Group.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultBucketBytes = 4 << 20
	DefaultChunkBytes  = 256 << 10
)

// Group describes one rank's place in one generation's ring. The coordinator
// commits it (world, peers, secret) and every rank joins with the same values,
// except Rank.
type Group struct {
	// Generation numbers the world; frames and handshakes of another generation
	// are refused.
	Generation int
	// Rank is this process's rank in [0, World).
	Rank, World int
	// Peers is the address of each rank, indexed by rank.
	Peers []string
	// Hosts are optional human names of the ranks, for errors; the default is
	// the address.
	Hosts []string
	// Secret is the per-generation secret; both ends of every connection prove
	// knowledge of it (mutual HMAC-SHA256 challenge/response). Required when
	// World > 1.
	Secret []byte
	// Timeout bounds every blocking read, write and connect: a peer that stops
	// answering for this long fails the call with an error naming it. Default
	// DefaultTimeout.
	Timeout time.Duration
	// JoinTimeout bounds how long Join waits for both neighbours to connect and
	// authenticate. Default Timeout.
	JoinTimeout time.Duration
	// BucketBytes is the fused bucket size of AllReduce: the buffer is reduced
	// bucket by bucket. Default DefaultBucketBytes.
	BucketBytes int
	// ChunkBytes is the pipelining granularity within a bucket's segment (and of
	// Broadcast). Default DefaultChunkBytes.
	ChunkBytes int
}

// withDefaults returns g with its zero fields set; sizes are rounded down to
// whole float32s.
func (g Group) withDefaults() Group {
	if g.Timeout <= 0 {
		g.Timeout = DefaultTimeout
	}
	if g.JoinTimeout <= 0 {
		g.JoinTimeout = g.Timeout
	}
	if g.BucketBytes <= 0 {
		g.BucketBytes = DefaultBucketBytes
	}
	if g.ChunkBytes <= 0 {
		g.ChunkBytes = DefaultChunkBytes
	}
	g.BucketBytes = max(4, g.BucketBytes&^3)
	g.ChunkBytes = max(4, g.ChunkBytes&^3)
	if len(g.Hosts) != g.World {
		hosts := make([]string, g.World)
		copy(hosts, g.Peers)
		g.Hosts = hosts
	}
	for i, h := range g.Hosts {
		if h == "" && i < len(g.Peers) {
			g.Hosts[i] = g.Peers[i]
		}
	}
	return g
}

func (g *Group) validate() error {
	switch {
	case g.World < 1:
		return fmt.Errorf("world %d: must be at least 1", g.World)
	case g.Rank < 0 || g.Rank >= g.World:
		return fmt.Errorf("rank %d is outside world %d", g.Rank, g.World)
	case g.Generation < 0:
		return fmt.Errorf("generation %d is negative", g.Generation)
	case len(g.Peers) != g.World:
		return fmt.Errorf("%d peer addresses for world %d", len(g.Peers), g.World)
	case len(g.Hosts) != 0 && len(g.Hosts) != g.World:
		return fmt.Errorf("%d host names for world %d", len(g.Hosts), g.World)
	case g.World > 1 && len(g.Secret) == 0:
		return errors.New("the group secret is empty")
	}
	return nil
}

func (g *Group) next() int { return (g.Rank + 1) % g.World }
func (g *Group) prev() int { return (g.Rank + g.World - 1) % g.World }

// peer names a rank for errors: "rank 2 (10.0.0.7:7600)".
func (g *Group) peer(rank int) string { return fmt.Sprintf("rank %d (%s)", rank, g.Hosts[rank]) }
