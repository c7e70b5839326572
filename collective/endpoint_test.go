package collective

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// stranger is an Endpoint that never listens: its dialOnce runs the real
// dialer's side of the handshake with whatever group it is given.
func stranger(t Transport) *Endpoint {
	return &Endpoint{t: t, addr: "stranger", log: slog.New(slog.DiscardHandler)}
}

func TestStrangersAreRefused(t *testing.T) {
	leakCheck(t)
	tr := TCP(nil, nil)
	eps := listenN(t, tr, tcpAddrs(3))
	target := eps[1].Addr()

	// Rank 1 starts waiting alone; ranks 0 and 2 join after the strangers.
	g1 := group(eps, 7, 1)
	type joined struct {
		r   *Ring
		err error
	}
	ch := make(chan joined, 1)
	go func() {
		r, err := eps[1].Join(context.Background(), g1)
		ch <- joined{r, err}
	}()

	// A stranger that sends garbage is dropped.
	garbage, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	junk := make([]byte, helloSize)
	rand.Read(junk)
	garbage.Write(junk)
	garbage.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(garbage); err != nil {
		t.Errorf("the endpoint did not close a connection that sent garbage: %v", err)
	}

	// A stranger that connects and says nothing does not hold up the Join.
	silent, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	// A peer with the wrong secret, using the real dialer: it sees the endpoint
	// does not share its secret and gives up.
	bad := group(eps, 7, 0)
	bad.Secret = []byte("not the secret")
	bad = bad.withDefaults()
	if _, err := stranger(tr).dialOnce(context.Background(), &bad); err == nil || !strings.Contains(err.Error(), "does not know generation 7's secret") {
		t.Errorf("dial with the wrong secret: %v", err)
	}

	// A stranger that sends a well-formed hello but cannot prove the secret is
	// refused by the endpoint.
	liar, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer liar.Close()
	h := hello{generation: 7, from: 0, to: 1, world: 3}
	h.encode()
	liar.SetDeadline(time.Now().Add(5 * time.Second))
	liar.Write(h.raw[:])
	if err := readStatus(liar); err != nil {
		t.Fatalf("hello: %v", err)
	}
	var nm [64]byte
	io.ReadFull(liar, nm[:])
	liar.Write(make([]byte, 32))
	if err := readStatus(liar); err == nil || !strings.Contains(err.Error(), "does not know the generation's secret") {
		t.Errorf("a made-up proof: %v", err)
	}

	// The real peers still form the ring.
	var wg sync.WaitGroup
	rings := make([]*Ring, 3)
	errs := make([]error, 3)
	for _, r := range []int{0, 2} {
		wg.Go(func() { rings[r], errs[r] = eps[r].Join(context.Background(), group(eps, 7, r)) })
	}
	wg.Wait()
	j := <-ch
	rings[1], errs[1] = j.r, j.err
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: Join: %v", r, err)
		}
		t.Cleanup(func() { rings[r].Close() })
	}
	checkSums(t, rings, []int{1000})
}

func TestStaleGenerationRefused(t *testing.T) {
	leakCheck(t)
	mem := NewMem()
	eps := listenN(t, mem, memAddrs(2))
	rings := joinAll(t, eps, 2, nil)

	// The endpoint refuses a Join for an older generation than it has joined.
	_, err := eps[0].Join(context.Background(), group(eps, 1, 0))
	mustContain(t, err, "generation 1 is older than generation 2")

	// A newcomer that still believes in generation 1 is refused by rank 1's
	// endpoint at once, not after a timeout.
	late := listenN(t, mem, []string{"mem-late"})[0]
	g := group([]*Endpoint{late, eps[1]}, 1, 0)
	g.Timeout = 5 * time.Second
	start := time.Now()
	_, err = late.Join(context.Background(), g)
	mustContain(t, err, "rank 1 (mem-1)", "refused", "generation 1 is older than generation 2")
	if d := time.Since(start); d > g.Timeout/2 {
		t.Errorf("the refusal took %s", d)
	}

	// The generation-2 ring is unaffected.
	checkSums(t, rings, []int{100})
}

func TestJoinTimesOutWithoutPeer(t *testing.T) {
	leakCheck(t)
	mem := NewMem()
	eps := listenN(t, mem, memAddrs(2))
	g := group(eps, 1, 0)
	g.Timeout = 200 * time.Millisecond
	_, err := eps[0].Join(context.Background(), g)
	mustContain(t, err, "generation 1 rank 0: join", "rank 1 (mem-1)")
}

func TestJoinRejectsBadGroups(t *testing.T) {
	eps := listenN(t, NewMem(), memAddrs(1))
	for _, tc := range []struct {
		edit func(*Group)
		msg  string
	}{
		{func(g *Group) { g.World = 0 }, "world 0"},
		{func(g *Group) { g.Rank = 3 }, "rank 3 is outside world"},
		{func(g *Group) { g.Peers = nil }, "0 peer addresses"},
		{func(g *Group) { g.World, g.Peers, g.Secret = 2, []string{"a", "b"}, nil }, "secret is empty"},
	} {
		g := group(eps, 1, 0)
		tc.edit(&g)
		_, err := eps[0].Join(context.Background(), g)
		mustContain(t, err, tc.msg)
	}
}

func TestHeldConnectionMeetsLateJoin(t *testing.T) {
	leakCheck(t)
	// Rank 0 joins first and dials rank 1 before rank 1 joins: rank 1's
	// endpoint holds the connection until its Join comes.
	eps := listenN(t, NewMem(), memAddrs(2))
	ch := make(chan error, 1)
	var r0 *Ring
	go func() {
		var err error
		r0, err = eps[0].Join(context.Background(), group(eps, 4, 0))
		ch <- err
	}()
	time.Sleep(300 * time.Millisecond)
	r1, err := eps[1].Join(context.Background(), group(eps, 4, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	defer r0.Close()
	defer r1.Close()
	checkSums(t, []*Ring{r0, r1}, []int{10})
}
