package collective

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestSetTimeoutCoversALatePeer: a rank that reaches the all-reduce 600 ms late
// fails its neighbours under a 200 ms Timeout, and does not once every rank set a
// longer one for that call (as the trainer does after the writer's validation).
func TestSetTimeoutCoversALatePeer(t *testing.T) {
	leakCheck(t)
	late := func(rings []*Ring) []error {
		errs := make([]error, len(rings))
		var wg sync.WaitGroup
		for r, ring := range rings {
			wg.Go(func() {
				if r == 1 {
					time.Sleep(600 * time.Millisecond)
				}
				errs[r] = ring.AllReduce(context.Background(), []float32{1, 2, 3, 4})
			})
		}
		wg.Wait()
		return errs
	}
	eps := listenN(t, NewMem(), memAddrs(3))
	short := func(g *Group) { g.Timeout = 200 * time.Millisecond }
	rings := joinAll(t, eps, 1, short)
	failed := 0
	for _, err := range late(rings) {
		if err != nil {
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("a peer 600 ms late did not fail a 200 ms Timeout")
	}
	for _, r := range rings {
		r.Close()
	}
	rings = joinAll(t, eps, 2, short)
	for _, r := range rings {
		r.SetTimeout(3 * time.Second)
	}
	for r, err := range late(rings) {
		if err != nil {
			t.Fatalf("rank %d with SetTimeout(3s): %v", r, err)
		}
	}
}
