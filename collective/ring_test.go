package collective

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

func TestSingle(t *testing.T) {
	buf := []float32{1, 2, 3}
	var c Collective = Single{}
	if err := c.AllReduce(context.Background(), buf); err != nil || buf[0] != 1 || buf[2] != 3 {
		t.Fatalf("Single.AllReduce: %v, %v", err, buf)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.AllReduce(ctx, buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("Single.AllReduce with a cancelled context: %v", err)
	}
}

var testLengths = []int{0, 1, 2, 3, 4, 5, 7, 64, 1000, 4097, 20011}

// small buckets and chunks exercise many buckets, segments and chunks per call.
func smallFrames(g *Group) {
	g.BucketBytes = 4 << 10
	g.ChunkBytes = 256
}

func TestAllReduceMem(t *testing.T) {
	leakCheck(t)
	for world := 1; world <= 5; world++ {
		for _, edit := range []func(*Group){nil, smallFrames} {
			t.Run(fmt.Sprintf("world=%d/small=%v", world, edit != nil), func(t *testing.T) {
				eps := listenN(t, NewMem(), memAddrs(world))
				checkSums(t, joinAll(t, eps, 1, edit), testLengths)
			})
		}
	}
}

func TestAllReduceTCP(t *testing.T) {
	leakCheck(t)
	for world := 1; world <= 4; world++ {
		t.Run(fmt.Sprintf("world=%d", world), func(t *testing.T) {
			eps := listenN(t, TCP(nil, nil), tcpAddrs(world))
			checkSums(t, joinAll(t, eps, 1, smallFrames), []int{0, 1, 3, 1000, 20011})
		})
	}
}

// checkSums checks AllReduce against a float64 reference, that every rank gets
// the same bits, and that a second run gives the same bits again.
func checkSums(t *testing.T, rings []*Ring, lengths []int) {
	t.Helper()
	world := len(rings)
	for _, n := range lengths {
		in := inputs(world, n, uint64(n))
		out := allReduce(t, rings, in)
		again := allReduce(t, rings, in)
		for i := range n {
			var ref, mag float64
			for r := range world {
				ref += float64(in[r][i])
				mag += math.Abs(float64(in[r][i]))
			}
			if d := math.Abs(float64(out[0][i]) - ref); d > 1e-6*mag+1e-30 {
				t.Fatalf("n=%d [%d]: got %g, float64 reference %g", n, i, out[0][i], ref)
			}
			for r := range world {
				if math.Float32bits(out[r][i]) != math.Float32bits(out[0][i]) {
					t.Fatalf("n=%d [%d]: rank %d has %g, rank 0 %g", n, i, r, out[r][i], out[0][i])
				}
				if math.Float32bits(again[r][i]) != math.Float32bits(out[r][i]) {
					t.Fatalf("n=%d [%d]: rank %d second run %g, first %g", n, i, r, again[r][i], out[r][i])
				}
			}
		}
	}
}

// TestAllReduceBitIdenticalAcrossRings forms two rings of the same world and
// checks they sum to the same bits.
func TestAllReduceBitIdenticalAcrossRings(t *testing.T) {
	leakCheck(t)
	const world, n = 4, 30011
	in := inputs(world, n, 7)
	var outs [2][][]float32
	for i := range outs {
		eps := listenN(t, TCP(nil, nil), tcpAddrs(world))
		outs[i] = allReduce(t, joinAll(t, eps, 3, smallFrames), in)
	}
	for j := range n {
		if math.Float32bits(outs[0][0][j]) != math.Float32bits(outs[1][0][j]) {
			t.Fatalf("[%d]: %g then %g", j, outs[0][0][j], outs[1][0][j])
		}
	}
}

func TestCutFailsEveryRankFast(t *testing.T) {
	leakCheck(t)
	const world, timeout = 4, 2 * time.Second
	mem := NewMem()
	eps := listenN(t, mem, memAddrs(world))
	rings := joinAll(t, eps, 5, func(g *Group) { g.Timeout = timeout })
	ch := loopUntilError(rings, 50000)
	time.Sleep(100 * time.Millisecond)
	cutAt := time.Now()
	mem.Cut(eps[1].Addr(), eps[2].Addr())
	res := collect(t, ch, world, 3*timeout)
	cutSeen := false
	for r, x := range res {
		if d := x.at.Sub(cutAt); d >= timeout {
			t.Errorf("rank %d failed %s after the cut, not within the %s timeout: %v", r, d, timeout, x.err)
		}
		var pe *PeerError
		if !errors.As(x.err, &pe) {
			t.Errorf("rank %d: error %v names no peer", r, x.err)
			continue
		}
		mustContain(t, x.err, "collective: generation 5 step", fmt.Sprintf("rank %d (mem-%d)", pe.Rank, pe.Rank))
		cutSeen = cutSeen || errors.Is(x.err, errMemCut)
		t.Logf("rank %d after %s: %v", r, x.at.Sub(cutAt).Round(time.Millisecond), x.err)
	}
	if !cutSeen {
		t.Errorf("no rank reported the cut link itself")
	}
	for r, ring := range rings {
		if err := ring.AllReduce(context.Background(), make([]float32, 4)); err == nil {
			t.Errorf("rank %d: a broken ring accepted another call", r)
		}
	}
}

func TestStalledRankFailsTheOthers(t *testing.T) {
	leakCheck(t)
	const world, timeout = 3, 300 * time.Millisecond
	mem := NewMem()
	eps := listenN(t, mem, memAddrs(world))
	rings := joinAll(t, eps, 2, func(g *Group) { g.Timeout = timeout })
	ch := loopUntilError(rings, 20000)
	time.Sleep(100 * time.Millisecond)
	stallAt := time.Now()
	mem.Stall(eps[1].Addr())
	res := collect(t, ch, world, 10*timeout)
	mem.Resume(eps[1].Addr())
	for r, x := range res {
		d := x.at.Sub(stallAt)
		t.Logf("rank %d after %s: %v", r, d.Round(time.Millisecond), x.err)
		if d > 3*timeout {
			t.Errorf("rank %d failed %s after the stall, more than 3x the %s timeout", r, d, timeout)
		}
	}
	// Rank 2 receives from the stalled rank 1.
	var pe *PeerError
	if !errors.As(res[2].err, &pe) || pe.Rank != 1 {
		t.Errorf("rank 2: error %v does not name rank 1", res[2].err)
	}
	mustContain(t, res[2].err, "rank 1 (mem-1) sent nothing for 300ms")
}

func TestCancelFailsNeighboursFast(t *testing.T) {
	leakCheck(t)
	const timeout = 5 * time.Second
	eps := listenN(t, NewMem(), memAddrs(2))
	rings := joinAll(t, eps, 1, func(g *Group) { g.Timeout = timeout })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- rings[1].AllReduce(context.Background(), make([]float32, 1000)) }()
	if err := rings[0].AllReduce(ctx, make([]float32, 1000)); !errors.Is(err, context.Canceled) {
		t.Fatalf("rank 0 with a cancelled context: %v", err)
	}
	err := <-done
	if err == nil || time.Since(start) > timeout/2 {
		t.Fatalf("rank 1 after its neighbour gave up: %v after %s", err, time.Since(start))
	}
	mustContain(t, err, "rank 0 (mem-0)")
}

func TestStepMismatch(t *testing.T) {
	leakCheck(t)
	eps := listenN(t, NewMem(), memAddrs(2))
	rings := joinAll(t, eps, 1, nil)
	rings[0].SetStep(41)
	rings[1].SetStep(40)
	errs := make(chan error, 2)
	for _, r := range rings {
		go func() { errs <- r.AllReduce(context.Background(), make([]float32, 100)) }()
	}
	e1, e2 := <-errs, <-errs
	if e1 == nil || e2 == nil {
		t.Fatalf("AllReduce at different steps: %v, %v", e1, e2)
	}
	if !errorsContain(e1, "out of lockstep") && !errorsContain(e2, "out of lockstep") {
		t.Errorf("neither error says the ranks are out of lockstep: %v; %v", e1, e2)
	}
}

func errorsContain(err error, s string) bool {
	return err != nil && contains(err.Error(), s)
}

func contains(a, b string) bool { return len(a) >= len(b) && (a == b || indexOf(a, b) >= 0) }

func indexOf(a, b string) int {
	for i := 0; i+len(b) <= len(a); i++ {
		if a[i:i+len(b)] == b {
			return i
		}
	}
	return -1
}

func TestHeaderChecks(t *testing.T) {
	want := header{kind: kindReduce, generation: 2, step: 41, seq: 3, index: 0, length: 1024, total: 4096}
	var b [headerSize]byte
	for _, tc := range []struct {
		name string
		edit func(*header)
		msg  string
	}{
		{"same", func(*header) {}, ""},
		{"older generation", func(h *header) { h.generation = 1 }, "frame of generation 1, this ring is generation 2: refused"},
		{"step", func(h *header) { h.step = 40 }, "is at step 40, this rank at step 41: ranks out of lockstep"},
		{"seq", func(h *header) { h.seq = 4 }, "operation 4"},
		{"length", func(h *header) { h.total = 8 }, "buffers must have the same length"},
		{"kind", func(h *header) { h.kind = kindBroadcast }, "broadcast frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := want
			tc.edit(&h)
			h.encode(&b)
			var got header
			if err := got.decode(&b); err != nil {
				t.Fatal(err)
			}
			err := got.check(&want)
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			mustContain(t, err, tc.msg)
		})
	}
	b[0] ^= 1
	var h header
	if err := h.decode(&b); !errors.Is(err, errBadMagic) {
		t.Fatalf("decode of a bad magic: %v", err)
	}
}

func TestReducePlanVolume(t *testing.T) {
	// Each rank sends 2(W-1)/W of the buffer, give or take rounding.
	const n = 1 << 16
	for world := 2; world <= 5; world++ {
		for rank := range world {
			p := reducePlan(n, world, rank, 1<<12, 1<<8)
			sent := 0
			for _, s := range p.sends {
				sent += s.n
			}
			want := 2 * (world - 1) * 4 * n / world
			if d := sent - want; d < -64*world || d > 64*world {
				t.Errorf("world %d rank %d sends %d bytes, want about %d", world, rank, sent, want)
			}
			if len(p.sends) != len(reducePlan(n, world, (rank+1)%world, 1<<12, 1<<8).recvs) {
				t.Errorf("world %d: rank %d's sends do not match rank %d's receives", world, rank, (rank+1)%world)
			}
		}
	}
}
