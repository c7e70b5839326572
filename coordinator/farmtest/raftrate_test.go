package farmtest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/samdiffsr/samdiffsr/coordinator"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/worker"
)

// BenchmarkCoordinatorDispatchCommit measures the coordinator alone: a 3-voter
// cluster takes a manifest, publishes one task message per image to the work queue
// (dispatch) and commits a lease and a result per task sent by 1024 concurrent clients
// over NATS, the requests workers send (commit). No JetStream fetch, segmentation or
// object upload: this is the coordinator's capacity, the ceiling for any farm.
func BenchmarkCoordinatorDispatchCommit(b *testing.B) {
	const n, clients = 20000, 1024
	c := startInproc(b, 3, "dispatch")
	names := natsutil.NamesFor("dispatch")
	conns := make([]*natsConn, 8)
	for i := range conns {
		conns[i] = &natsConn{c.conn(b, fmt.Sprintf("client%d", i))}
	}
	ctx := context.Background()
	total := 0
	b.ResetTimer()
	start := time.Now()
	for it := range b.N {
		entries := make([]natsutil.ImageEntry, n)
		for i := range entries {
			id := fmt.Sprintf("it%d/t%06d", it, i)
			entries[i] = natsutil.ImageEntry{ID: id, Path: "/x/" + id, Size: 1, SHA256: fmt.Sprintf("%064x", it*n+i+1)}
		}
		if _, err := worker.SubmitMasks(ctx, conns[0].nc, "dispatch", "h", entries); err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nc := conns[g%len(conns)].nc
				for i := g; i < n; i += clients {
					e := entries[i]
					if _, err := natsutil.RequestLeader(ctx, nc, names.Coord("lease"), natsutil.LeaseRequest{TaskID: e.ID, Worker: "w", Attempt: 1}, 10*time.Second); err != nil {
						b.Error(err)
						return
					}
					r := natsutil.ReportRequest{TaskID: e.ID, Worker: "w", Attempt: 1, OK: true, ImageSHA256: e.SHA256, Key: e.SHA256, Digest: "d"}
					if _, err := natsutil.RequestLeader(ctx, nc, names.Coord("report"), r, 10*time.Second); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		total += n
		// Every task dispatched (its message stored in the stream) and committed done.
		waitUntil(b, time.Minute, func() bool {
			ok := false
			c.leader(b).View(func(s *coordinator.State) {
				ok = s.Counts[coordinator.TaskDone] == total && len(coordinator.ToPublish(s, 1)) == 0
			})
			return ok
		})
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "tasks/s")
	b.ReportMetric(0, "ns/op")
}

type natsConn struct{ nc *nats.Conn }
