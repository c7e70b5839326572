package collective_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/samdiffsr/samdiffsr/collective"
)

// Two ranks in one process sum their gradients over the in-memory transport;
// with collective.TCP(nil, nil) and "127.0.0.1:0" addresses the code is the same.
func ExampleRing_AllReduce() {
	mem := collective.NewMem()
	var eps []*collective.Endpoint
	for _, addr := range []string{"mem-0", "mem-1"} {
		e, err := collective.Listen(mem, addr, nil)
		if err != nil {
			panic(err)
		}
		defer e.Close()
		eps = append(eps, e)
	}
	grads := [][]float32{{1, 2, 3}, {10, 20, 30}}
	var wg sync.WaitGroup
	for rank, e := range eps {
		wg.Go(func() {
			ring, err := e.Join(context.Background(), collective.Group{
				Generation: 1,
				Rank:       rank,
				World:      2,
				Peers:      []string{"mem-0", "mem-1"},
				Secret:     []byte("committed with the generation"),
				Timeout:    5 * time.Second,
			})
			if err != nil {
				panic(err)
			}
			defer ring.Close()
			ring.SetStep(1)
			if err := ring.AllReduce(context.Background(), grads[rank]); err != nil {
				panic(err)
			}
		})
	}
	wg.Wait()
	fmt.Println(grads[0], grads[1])
	// Output: [11 22 33] [11 22 33]
}
