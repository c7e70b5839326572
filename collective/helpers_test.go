package collective

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// leakCheck fails the test if goroutines started during it outlive it (after
// the test's other cleanups, which close rings and endpoints, have run).
func leakCheck(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before+1 {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after:\n%s", before, n, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// listenN opens n endpoints on tr at the given addresses ("" or host:0 picks).
func listenN(t testing.TB, tr Transport, addrs []string) []*Endpoint {
	t.Helper()
	eps := make([]*Endpoint, len(addrs))
	for i, a := range addrs {
		e, err := Listen(tr, a, nil)
		if err != nil {
			t.Fatalf("Listen(%q): %v", a, err)
		}
		t.Cleanup(func() { e.Close() })
		eps[i] = e
	}
	return eps
}

func memAddrs(n int) []string {
	a := make([]string, n)
	for i := range a {
		a[i] = fmt.Sprintf("mem-%d", i)
	}
	return a
}

func tcpAddrs(n int) []string {
	a := make([]string, n)
	for i := range a {
		a[i] = "127.0.0.1:0"
	}
	return a
}

func group(eps []*Endpoint, gen, rank int) Group {
	peers := make([]string, len(eps))
	for i, e := range eps {
		peers[i] = e.Addr()
	}
	return Group{
		Generation: gen,
		Rank:       rank,
		World:      len(eps),
		Peers:      peers,
		Secret:     []byte(fmt.Sprintf("secret of generation %d", gen)),
		Timeout:    5 * time.Second,
	}
}

// joinAll joins every endpoint to generation gen concurrently; edit adjusts
// each rank's group.
func joinAll(t testing.TB, eps []*Endpoint, gen int, edit func(*Group)) []*Ring {
	t.Helper()
	rings := make([]*Ring, len(eps))
	errs := make([]error, len(eps))
	var wg sync.WaitGroup
	for r := range eps {
		g := group(eps, gen, r)
		if edit != nil {
			edit(&g)
		}
		wg.Go(func() { rings[r], errs[r] = eps[r].Join(context.Background(), g) })
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: Join: %v", r, err)
		}
	}
	for _, r := range rings {
		t.Cleanup(func() { r.Close() })
	}
	return rings
}

// inputs makes each rank's buffer of n values, deterministically.
func inputs(world, n int, seed uint64) [][]float32 {
	in := make([][]float32, world)
	for r := range in {
		rng := rand.New(rand.NewPCG(seed, uint64(r)))
		in[r] = make([]float32, n)
		for i := range in[r] {
			in[r][i] = float32(rng.NormFloat64() * (1 + float64(i%7)))
		}
	}
	return in
}

// allReduce runs AllReduce on every ring concurrently on copies of in.
func allReduce(t *testing.T, rings []*Ring, in [][]float32) [][]float32 {
	t.Helper()
	out := make([][]float32, len(rings))
	errs := make([]error, len(rings))
	var wg sync.WaitGroup
	for r := range rings {
		out[r] = append([]float32(nil), in[r]...)
		wg.Go(func() { errs[r] = rings[r].AllReduce(context.Background(), out[r]) })
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: AllReduce: %v", r, err)
		}
	}
	return out
}

// result is what a rank's call loop ended with.
type result struct {
	err error
	at  time.Time
}

// loopUntilError runs AllReduce on every ring, step after step, until each fails.
func loopUntilError(rings []*Ring, n int) chan [2]any {
	ch := make(chan [2]any, len(rings))
	for r, ring := range rings {
		go func() {
			buf := make([]float32, n)
			for step := int64(0); ; step++ {
				ring.SetStep(step)
				if err := ring.AllReduce(context.Background(), buf); err != nil {
					ch <- [2]any{r, result{err, time.Now()}}
					return
				}
			}
		}()
	}
	return ch
}

func collect(t *testing.T, ch chan [2]any, world int, limit time.Duration) []result {
	t.Helper()
	res := make([]result, world)
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for range world {
		select {
		case v := <-ch:
			res[v[0].(int)] = v[1].(result)
		case <-timer.C:
			t.Fatalf("ranks still running after %s: the ring hangs", limit)
		}
	}
	return res
}

func mustContain(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one containing %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}
