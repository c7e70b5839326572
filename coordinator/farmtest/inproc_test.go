package farmtest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/samdiffsr/samdiffsr/coordinator"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/worker"
)

// A task whose every delivery is lost with its worker (fetched, never leased, acked or
// reported) is failed with its reason when JetStream gives up on it: it never stays
// pending forever.
func TestMaxDeliveriesWithoutReports(t *testing.T) {
	const job = "maxdel"
	c := startInprocWith(t, 1, job, func(o *coordinator.Options) {
		o.MaxDeliver, o.AckWait, o.ReconcileEvery = 2, 300*time.Millisecond, 200*time.Millisecond
	})
	nc := c.conn(t, "lost-worker")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	entries := []natsutil.ImageEntry{{ID: "a", Path: "/nowhere/a.png", Size: 1, SHA256: strings.Repeat("a", 64)}}
	if _, err := worker.SubmitMasks(ctx, nc, job, "h", entries); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	names := natsutil.NamesFor(job)
	var cons jetstream.Consumer
	waitUntil(t, 10*time.Second, func() bool {
		var err error
		cons, err = js.Consumer(ctx, names.TaskStream(), names.MaskConsumer())
		return err == nil
	})
	// Workers keep pulling; every one that gets the task dies with it (no ack).
	got := make(chan int, 10)
	pctx, stopPull := context.WithCancel(ctx)
	defer stopPull()
	go func() {
		for pctx.Err() == nil {
			b, err := cons.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				continue
			}
			for m := range b.Messages() {
				md, _ := m.Metadata()
				got <- int(md.NumDelivered)
			}
		}
	}()
	var task coordinator.MaskTask
	waitUntil(t, 15*time.Second, func() bool {
		ok := false
		c.leader(t).View(func(s *coordinator.State) {
			task = *s.Tasks["a"]
			ok = task.State == coordinator.TaskFailed
		})
		return ok
	})
	stopPull()
	if n := len(got); n != 2 {
		t.Errorf("the task was delivered %d times, want max_deliver = 2", n)
	}
	if !strings.Contains(task.Reason, "delivered 2 times") || task.Attempts != 2 {
		t.Errorf("task %+v: want failed after 2 deliveries with the reason", task)
	}
	// The leader removes the message of the failed task from the work queue.
	stream, _ := js.Stream(ctx, names.TaskStream())
	waitUntil(t, 10*time.Second, func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}

// The gap a missed advisory used to leave: a task leased, then every delivery lost
// with its worker while no leader listened for JetStream's max-deliveries advisory
// (the leader was down). The stream still holds the message but the consumer will
// never deliver it again; the next leader's reconcile finds it at or below the
// consumer's ack floor and fails it with its reason, so it does not stay pending.
func TestGaveUpWhileLeaderDown(t *testing.T) {
	const job = "gaveup"
	var opts coordinator.Options
	c := startInprocWith(t, 1, job, func(o *coordinator.Options) {
		o.MaxDeliver, o.AckWait, o.ReconcileEvery = 2, 300*time.Millisecond, 200*time.Millisecond
		opts = *o
	})
	opts.Bootstrap = true
	nc := c.conn(t, "lost-worker")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	entries := []natsutil.ImageEntry{{ID: "a", Path: "/nowhere/a.png", Size: 1, SHA256: strings.Repeat("a", 64)}}
	if _, err := worker.SubmitMasks(ctx, nc, job, "h", entries); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	names := natsutil.NamesFor(job)
	var cons jetstream.Consumer
	waitUntil(t, 10*time.Second, func() bool {
		var err error
		cons, err = js.Consumer(ctx, names.TaskStream(), names.MaskConsumer())
		return err == nil
	})
	fetch := func() (jetstream.Msg, bool) {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			return nil, false
		}
		for m := range b.Messages() {
			return m, true
		}
		return nil, false
	}
	// Delivery 1 is leased, then its worker dies.
	var m jetstream.Msg
	waitUntil(t, 10*time.Second, func() bool {
		var ok bool
		m, ok = fetch()
		return ok
	})
	md, _ := m.Metadata()
	if _, err := natsutil.RequestLeader(ctx, nc, names.Coord("lease"), natsutil.LeaseRequest{TaskID: "a", Worker: "lost", Attempt: int(md.NumDelivered)}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// The leader goes down; the rest of the deliveries are lost too, and JetStream
	// gives up on the message with nobody listening for its advisory.
	c.nodes[0].Close()
	waitUntil(t, 15*time.Second, func() bool {
		fetch()
		info, err := cons.Info(ctx)
		return err == nil && info.NumRedelivered > 0 && info.NumAckPending == 0
	})
	stream, _ := js.Stream(ctx, names.TaskStream())
	if info, err := stream.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("stream %+v, %v: want the given-up message still held", info, err)
	}
	// The next leader (the same voter restarted on its data) closes the gap.
	n, err := coordinator.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[0] = n
	var task coordinator.MaskTask
	waitUntil(t, 15*time.Second, func() bool {
		ok := false
		n.View(func(s *coordinator.State) {
			if tk := s.Tasks["a"]; tk != nil {
				task = *tk
				ok = task.State.Final()
			}
		})
		return ok
	})
	if task.State != coordinator.TaskFailed || !strings.Contains(task.Reason, "delivered 2 times") || task.Attempts != 2 {
		t.Errorf("task %+v: want failed after 2 deliveries with the reason", task)
	}
	waitUntil(t, 10*time.Second, func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}

// Heartbeats of a registered worker are coalesced: a burst costs one raft command,
// a changed host is committed at once, and liveness is committed again once it gets
// HeartbeatCommit old.
func TestHeartbeatsCoalesced(t *testing.T) {
	const job = "hb"
	reg := prometheus.NewRegistry()
	c := startInprocWith(t, 1, job, func(o *coordinator.Options) {
		o.Heartbeat, o.HeartbeatCommit, o.Metrics = time.Second, 500*time.Millisecond, reg
	})
	coalesced := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "samdiffsr_coordinator_heartbeats_coalesced_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatal("no coalesced-heartbeats counter")
		return 0
	}
	nc := c.conn(t, "w1")
	names := natsutil.NamesFor(job)
	n := c.leader(t)
	send := func(host string, k int) {
		data, _ := json.Marshal(natsutil.HeartbeatMessage{Worker: "w1", Roles: []string{"mask"}, Host: host})
		for range k {
			if err := nc.Publish(names.Coord("heartbeat"), data); err != nil {
				t.Fatal(err)
			}
		}
		nc.Flush()
	}
	worker := func() (w coordinator.WorkerInfo, index uint64) {
		n.View(func(s *coordinator.State) {
			if x := s.Workers["w1"]; x != nil {
				w = *x
			}
			index = s.Index
		})
		return w, index
	}
	// Registered (the leader serves heartbeats once it has set up JetStream).
	waitUntil(t, 10*time.Second, func() bool { send("h0", 1); w, _ := worker(); return w.Host == "h0" })
	time.Sleep(100 * time.Millisecond)
	before := coalesced()
	send("h1", 200)
	waitUntil(t, 10*time.Second, func() bool { w, _ := worker(); return w.Host == "h1" })
	waitUntil(t, 10*time.Second, func() bool { return coalesced()-before >= 199 })
	w, idx := worker()
	send("h2", 1)
	waitUntil(t, 10*time.Second, func() bool { w, _ := worker(); return w.Host == "h2" })
	_, idx = worker()
	time.Sleep(600 * time.Millisecond)
	send("h2", 1)
	waitUntil(t, 10*time.Second, func() bool { x, _ := worker(); return x.LastSeen > w.LastSeen+int64(500*time.Millisecond) })
	if _, i := worker(); i <= idx {
		t.Errorf("stale liveness not committed (index %d, was %d)", i, idx)
	}
}
