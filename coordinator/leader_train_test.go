package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fakeRank is a training worker as the leader sees it: it waits (TrainReady every
// heartbeat), runs (TrainProgress), or is silent.
type fakeRank struct {
	id     string
	mode   string // "ready", "run", "silent"
	gen    int    // generation it last ran in (or runs in)
	reason string
	step   int64
	first  time.Time
}

type trainHarness struct {
	t     *testing.T
	node  *Node
	opts  Options
	nc    *nats.Conn
	kv    jetstream.KeyValue
	names natsutil.Names
	ranks []*fakeRank
}

func startTrainHarness(t *testing.T) *trainHarness {
	t.Helper()
	dir := t.TempDir()
	srv, err := natsutil.StartEmbedded(context.Background(), natsutil.EmbeddedOptions{StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	conn := func(name string) *nats.Conn {
		nc, err := natsutil.Connect(context.Background(), configs.NATS{}, srv, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	h := &trainHarness{t: t, nc: conn("fake-workers"), names: natsutil.NamesFor("traintest")}
	h.opts = Options{ID: "c1", RaftAddr: freeAddr(t), DataDir: filepath.Join(dir, "c1"), Bootstrap: true, Conn: conn("c1"),
		Job: "traintest", Heartbeat: 100 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond, TrainTick: 50 * time.Millisecond,
		Train: configs.ClusterTrain{MinWorkers: 2, RegroupGrace: 700 * time.Millisecond, LostAfter: time.Second},
		Log:   slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard}
	h.start()
	return h
}

func (h *trainHarness) start() {
	h.t.Helper()
	n, err := Start(context.Background(), h.opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.node = n
	h.t.Cleanup(func() { n.Close() })
	eventually(h.t, 20*time.Second, "leadership", n.IsLeader)
}

// pump sends one round of every fake rank's reports.
func (h *trainHarness) pump(ctx context.Context) {
	for _, r := range h.ranks {
		switch r.mode {
		case "ready":
			msg := natsutil.TrainReady{Worker: r.id, Host: "host-" + r.id, Addr: "127.0.0.1:1" + r.id[len(r.id)-1:],
				Stage: natsutil.TrainStageDiffusion, Step: r.step, Generation: r.gen, Reason: r.reason}
			rep, err := natsutil.RequestLeader(ctx, h.nc, h.names.Coord("train.ready"), msg, time.Second)
			if err != nil || rep.Outcome != string(OK) {
				h.t.Logf("train.ready of %s: %+v %v", r.id, rep, err)
			}
		case "run":
			r.step++
			if r.first.IsZero() {
				r.first = time.Now()
			}
			data, _ := json.Marshal(natsutil.TrainProgress{Worker: r.id, Generation: r.gen, Stage: natsutil.TrainStageDiffusion, Step: r.step,
				Steps: 1, StepsPerS: 10, ComputeS: 0.08, WaitS: 0.02, Bytes: 4096, FirstStepAt: r.first, Time: time.Now()})
			h.nc.Publish(h.names.Coord("train.progress"), data)
		}
	}
	h.nc.Flush()
}

// until pumps reports every 50ms until cond holds.
func (h *trainHarness) until(timeout time.Duration, what string, cond func() bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		if ctx.Err() != nil {
			h.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		h.pump(ctx)
		time.Sleep(50 * time.Millisecond)
	}
}

// published returns the generation in the training bucket (zero: none).
func (h *trainHarness) published() natsutil.GenerationInfo {
	var gi natsutil.GenerationInfo
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if h.kv == nil {
		js, _ := jetstream.New(h.nc)
		kv, err := js.KeyValue(ctx, h.names.TrainBucket())
		if err != nil {
			return gi
		}
		h.kv = kv
	}
	if e, err := h.kv.Get(ctx, natsutil.TrainGenerationKey); err == nil {
		json.Unmarshal(e.Value(), &gi)
	}
	return gi
}

func (h *trainHarness) generation(number int) (g Generation) {
	h.node.View(func(s *State) {
		if x := s.generation(number); x != nil {
			g = x.clone()
		}
	})
	return g
}

func workersOf(gi natsutil.GenerationInfo) []string {
	var ws []string
	for _, r := range gi.Ranks {
		ws = append(ws, r.Worker)
	}
	return ws
}

// Three workers form one generation; one fails and another goes silent, so the
// generation ends and the survivors regroup after the grace; a silent member ends
// the next; a restarted leader republishes the truth.
func TestTrainGenerationsOverNATS(t *testing.T) {
	h := startTrainHarness(t)
	a, b, c := &fakeRank{id: "w-a", mode: "ready"}, &fakeRank{id: "w-b", mode: "ready"}, &fakeRank{id: "w-c", mode: "ready"}
	h.ranks = []*fakeRank{a, b, c}

	// Generation 1: all three, in id order, with a fresh secret.
	h.until(10*time.Second, "generation 1 in the bucket", func() bool { return h.published().Number == 1 })
	g1 := h.published()
	if fmt.Sprint(workersOf(g1)) != "[w-a w-b w-c]" || len(g1.Secret) != 64 || g1.Secret != h.generation(1).Secret {
		t.Fatalf("generation 1 = %+v: want w-a w-b w-c with the committed 64-hex secret", g1)
	}
	if g1.Ranks[1].Addr != "127.0.0.1:1b" || g1.Ranks[1].Host != "host-w-b" || g1.EndStep != 0 {
		t.Errorf("generation 1 rank 1 = %+v, end step %d", g1.Ranks[1], g1.EndStep)
	}
	// A rank at the rendezvous of generation 1 (purged once generation 3 forms).
	if _, err := h.kv.Put(context.Background(), natsutil.RendezvousKey(1, 0), []byte("127.0.0.1:1a")); err != nil {
		t.Fatal(err)
	}
	for _, r := range h.ranks {
		r.mode, r.gen = "run", 1
	}
	h.until(10*time.Second, "generation 1's first step", func() bool { return h.generation(1).FirstStepAt != 0 })

	// w-a fails, w-b follows when its ring breaks, w-c is never heard again.
	a.mode, a.reason = "ready", "error: collective: peer reset"
	c.mode = "silent"
	h.until(10*time.Second, "generation 1 to end", func() bool { return h.generation(1).Ended })
	b.mode, b.reason = "ready", "collective: peer closed"
	if r := h.generation(1).EndReason; !strings.Contains(r, "rank 0 (w-a): error: collective: peer reset") {
		t.Errorf("generation 1 ended for %q", r)
	}
	h.until(10*time.Second, "generation 2 in the bucket", func() bool { return h.published().Number == 2 })
	g1r, g2 := h.generation(1), h.generation(2)
	if fmt.Sprint(g2.Ranks) != "[w-a w-b]" || fmt.Sprint(g2.Lost) != "[w-c]" || fmt.Sprint(workersOf(h.published())) != "[w-a w-b]" {
		t.Fatalf("generation 2 = %+v: want w-a w-b without w-c", g2)
	}
	if waited := time.Duration(g2.CreatedAt - g1r.EndedAt); waited < h.opts.Train.RegroupGrace {
		t.Errorf("generation 2 formed %v after generation 1 ended, before the regroup grace %v (w-c never reported)", waited, h.opts.Train.RegroupGrace)
	}
	if g2.StartStep != max(a.step, b.step) {
		t.Errorf("generation 2 starts at %d, want the most advanced state %d", g2.StartStep, max(a.step, b.step))
	}

	// Generation 2 runs; w-b goes silent and is declared lost after LostAfter.
	for _, r := range []*fakeRank{a, b} {
		r.mode, r.gen, r.reason, r.first = "run", 2, "", time.Time{}
	}
	h.until(10*time.Second, "generation 2's first step", func() bool { return h.generation(2).FirstStepAt != 0 })
	b.mode = "silent"
	h.until(10*time.Second, "generation 2 to end", func() bool { return h.generation(2).Ended })
	if g := h.generation(2); fmt.Sprint(g.Silent) != "[w-b]" || !strings.Contains(g.EndReason, "rank 1 (w-b) silent for") {
		t.Errorf("generation 2 = %+v: want ended with w-b silent", g)
	}

	// Status over NATS: history with reasons, the lost worker and recovery times.
	var st natsutil.Status
	if err := natsutil.Request(context.Background(), h.nc, h.names.Coord("status"), struct{}{}, &st, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if st.Train == nil || st.Train.Generation != 2 || st.Train.Active || len(st.Train.History) != 2 {
		t.Fatalf("train status %+v", st.Train)
	}
	hist := st.Train.History
	if !strings.Contains(hist[0].Reason, "peer reset") || fmt.Sprint(hist[1].Lost) != "[w-c]" || hist[1].RecoveryS <= 0 || !strings.Contains(hist[1].Reason, "silent") {
		t.Errorf("history %+v", hist)
	}

	// w-b comes back: generation 3, and the rendezvous of generation 1 is purged.
	a.mode, a.reason = "ready", "collective: timeout"
	b.mode, b.gen, b.reason = "ready", 2, "collective: timeout"
	h.until(10*time.Second, "generation 3 in the bucket", func() bool { return h.published().Number == 3 })
	eventually(t, 5*time.Second, "generation 1's rendezvous purged", func() bool {
		_, err := h.kv.Get(context.Background(), natsutil.RendezvousKey(1, 0))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	if st := h.node.Status(); st.Train == nil || !st.Train.Active || st.Train.Generation != 3 {
		t.Errorf("status %+v", st.Train)
	}

	// A new leader (the voter restarted on its data) puts the truth back in the bucket.
	if err := h.kv.Delete(context.Background(), natsutil.TrainGenerationKey); err != nil {
		t.Fatal(err)
	}
	h.node.Close()
	h.start()
	eventually(t, 10*time.Second, "generation 3 republished", func() bool { return h.published().Number == 3 })
	if gi := h.published(); gi.Secret != h.generation(3).Secret || !slices.Equal(workersOf(gi), h.generation(3).Ranks) {
		t.Errorf("republished %+v", gi)
	}
}

// The leader refuses a malformed TrainReady for good and accepts a finished worker's.
func TestTrainReadyValidation(t *testing.T) {
	h := startTrainHarness(t)
	var rep natsutil.Reply
	eventually(t, 10*time.Second, "the training handlers", func() bool {
		err := natsutil.Request(context.Background(), h.nc, h.names.Coord("train.ready"), natsutil.TrainReady{Worker: "w"}, &rep, time.Second)
		return err == nil
	})
	if rep.Err == "" || rep.Retry {
		t.Errorf("ready without an address: %+v, want a definite refusal", rep)
	}
	rep = natsutil.Reply{}
	if err := natsutil.Request(context.Background(), h.nc, h.names.Coord("train.ready"), natsutil.TrainReady{Worker: "w", Finished: true}, &rep, time.Second); err != nil || rep.Err != "" {
		t.Errorf("finished worker: %+v %v", rep, err)
	}
}
