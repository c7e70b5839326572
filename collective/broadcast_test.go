package collective

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

func TestBroadcast(t *testing.T) {
	leakCheck(t)
	for world := 1; world <= 4; world++ {
		t.Run(fmt.Sprintf("world=%d", world), func(t *testing.T) {
			eps := listenN(t, NewMem(), memAddrs(world))
			rings := joinAll(t, eps, 1, func(g *Group) { g.ChunkBytes = 4096 })
			for _, n := range []int{0, 1, 4095, 4096, 100003} {
				for root := range world {
					want := make([]byte, n)
					rng := rand.New(rand.NewPCG(uint64(n), uint64(root)))
					for i := range want {
						want[i] = byte(rng.Uint32())
					}
					bufs := make([][]byte, world)
					errs := make([]error, world)
					var wg sync.WaitGroup
					for r := range world {
						bufs[r] = make([]byte, n)
						if r == root {
							copy(bufs[r], want)
						}
						wg.Go(func() { errs[r] = rings[r].Broadcast(context.Background(), root, bufs[r]) })
					}
					wg.Wait()
					for r := range world {
						if errs[r] != nil {
							t.Fatalf("n=%d root=%d rank %d: %v", n, root, r, errs[r])
						}
						if !bytes.Equal(bufs[r], want) {
							t.Fatalf("n=%d root=%d: rank %d received different bytes", n, root, r)
						}
					}
				}
			}
		})
	}
}

func TestBroadcastLengthMismatch(t *testing.T) {
	leakCheck(t)
	eps := listenN(t, NewMem(), memAddrs(2))
	rings := joinAll(t, eps, 1, nil)
	errs := make(chan error, 2)
	go func() { errs <- rings[0].Broadcast(context.Background(), 0, make([]byte, 100)) }()
	go func() { errs <- rings[1].Broadcast(context.Background(), 0, make([]byte, 99)) }()
	e1, e2 := <-errs, <-errs
	if !errorsContain(e1, "same length") && !errorsContain(e2, "same length") {
		t.Fatalf("buffers of different lengths: %v; %v", e1, e2)
	}
}

func TestChunkAndDigestCheckers(t *testing.T) {
	p := []byte("some checkpoint bytes")
	crc := chunkCRC(p)
	if err := checkChunk(0, crc, p); err != nil {
		t.Fatal(err)
	}
	q := bytes.Clone(p)
	q[3] ^= 0x10
	mustContain(t, checkChunk(5, crc, q), "frame 5 corrupt")
	sum := sha256.Sum256(p)
	if err := checkDigest(sum[:], sum[:]); err != nil {
		t.Fatal(err)
	}
	other := sha256.Sum256(q)
	mustContain(t, checkDigest(other[:], sum[:]), "corrupt broadcast buffer")
}

// corrupting flips one byte of everything written on dialed connections past
// the given offset.
type corrupting struct {
	Transport
	at int
}

func (c corrupting) Dial(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := c.Transport.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &flipConn{Conn: conn, at: c.at}, nil
}

type flipConn struct {
	net.Conn
	mu  sync.Mutex
	at  int
	off int
}

func (f *flipConn) Write(b []byte) (int, error) {
	f.mu.Lock()
	if f.at >= f.off && f.at < f.off+len(b) {
		b = bytes.Clone(b)
		b[f.at-f.off] ^= 0x01
	}
	f.off += len(b)
	f.mu.Unlock()
	return f.Conn.Write(b)
}

func TestBroadcastDetectsCorruption(t *testing.T) {
	leakCheck(t)
	// The handshake is 64+32 bytes; byte 1000 is in the first chunk's payload.
	tr := corrupting{Transport: NewMem(), at: 1000}
	eps := listenN(t, tr, memAddrs(2))
	rings := joinAll(t, eps, 1, nil)
	errs := make(chan error, 2)
	go func() { errs <- rings[0].Broadcast(context.Background(), 0, make([]byte, 10000)) }()
	go func() { errs <- rings[1].Broadcast(context.Background(), 0, make([]byte, 10000)) }()
	e1, e2 := <-errs, <-errs
	if !errorsContain(e1, "corrupt") && !errorsContain(e2, "corrupt") {
		t.Fatalf("a flipped byte went unnoticed: %v; %v", e1, e2)
	}
}
