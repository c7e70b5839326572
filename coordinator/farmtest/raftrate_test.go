package farmtest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/coordinator"
)

// BenchmarkRaftProposals measures task updates committed per second through batched
// raft applies on a 3-voter coordinator, with 256 concurrent proposers (no NATS I/O).
func BenchmarkRaftProposals(b *testing.B) {
	c := startInproc(b, 3, "raftbench")
	leader := c.leader(b)
	ctx := context.Background()
	const n = 20000
	imgs := make([]coordinator.Image, n)
	for i := range imgs {
		imgs[i] = coordinator.Image{ID: fmt.Sprintf("t%06d", i), SHA256: fmt.Sprintf("%064x", i)}
	}
	if _, err := leader.Propose(ctx, coordinator.Command{Kind: coordinator.CmdSetJob, SetJob: &coordinator.JobSpec{Name: "raftbench", MaxDeliver: 3}}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += 1000 {
		if _, err := leader.Propose(ctx, coordinator.Command{Kind: coordinator.CmdAddImages, Images: imgs[i : i+1000]}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	ops := 0
	for range b.N {
		var wg sync.WaitGroup
		for g := range 256 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < n; i += 256 {
					id := imgs[i].ID
					leader.Propose(ctx, coordinator.Command{Kind: coordinator.CmdLease, Lease: &coordinator.Lease{TaskID: id, Worker: "w", Attempt: 1}})
					leader.Propose(ctx, coordinator.Command{Kind: coordinator.CmdDone, Done: &coordinator.Done{TaskID: id, Worker: "w", Attempt: 1, ResultKey: "k", Digest: "d"}})
				}
			}()
		}
		wg.Wait()
		ops += n
	}
	b.ReportMetric(float64(ops)/time.Since(start).Seconds(), "tasks/s")
	b.ReportMetric(0, "ns/op")
}
