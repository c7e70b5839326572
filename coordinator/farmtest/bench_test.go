package farmtest

import (
	"context"
	"fmt"
	"image"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/coordinator"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/maskgen"
	"github.com/samdiffsr/samdiffsr/worker"
)

// flatSegmenter is a real, trivial Segmenter: the whole image is region 1.
type flatSegmenter struct{}

func (flatSegmenter) Name() string           { return "flat" }
func (flatSegmenter) Params() map[string]any { return nil }
func (flatSegmenter) Segment(_ context.Context, img image.Image) (*maskgen.LabelMap, error) {
	b := img.Bounds()
	m := maskgen.NewLabelMap(b.Dx(), b.Dy())
	for i := range m.Labels {
		m.Labels[i] = 1
	}
	m.Regions = 1
	return m, nil
}

// noopProcess stands in for segmentation entirely: a fixed 8x8 flat label map, no file
// read. What is left is the farm's own cost: queue, lease, object put, commit, ack.
func noopProcess() (worker.FarmProcess, error) {
	m, _ := flatSegmenter{}.Segment(context.Background(), image.NewGray(image.Rect(0, 0, 8, 8)))
	data, err := maskgen.EncodeLabelMapPNG(m)
	if err != nil {
		return nil, err
	}
	sc, _ := maskgen.MarshalSidecar(&maskgen.Sidecar{Format: maskgen.SidecarFormat, Segmenter: "flat", Regions: 1, Width: 8, Height: 8})
	return func(ctx context.Context, id, path string) (*worker.FarmOutput, error) {
		return &worker.FarmOutput{Regions: 1, PNG: data, Sidecar: sc}, nil
	}, nil
}

// inproc is an in-process cluster: embedded NATS and coordinator voters.
type inproc struct {
	srv   *server.Server
	nodes []*coordinator.Node
	conns []*nats.Conn
}

func startInproc(b testing.TB, voters int, job string) *inproc {
	return startInprocWith(b, voters, job, nil)
}

// startInprocWith is startInproc with options adjusted by adjust.
func startInprocWith(b testing.TB, voters int, job string, adjust func(*coordinator.Options)) *inproc {
	b.Helper()
	dir := b.TempDir()
	srv, err := natsutil.StartEmbedded(context.Background(), natsutil.EmbeddedOptions{StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		b.Fatal(err)
	}
	c := &inproc{srv: srv}
	b.Cleanup(c.close)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := 1; i <= voters; i++ {
		nc := c.conn(b, fmt.Sprintf("c%d", i))
		o := coordinator.Options{ID: fmt.Sprintf("c%d", i), RaftAddr: fmt.Sprintf("127.0.0.1:%d", freePort(b)),
			DataDir: filepath.Join(dir, fmt.Sprintf("c%d", i)), Conn: nc, Job: job, MaxDeliver: 3, LeaseTTL: time.Minute,
			AckWait: 10 * time.Second, Heartbeat: time.Second, Log: quiet, RaftLog: io.Discard}
		if adjust != nil {
			adjust(&o)
		}
		if i == 1 {
			o.Bootstrap = true
		} else {
			o.Join = []string{"c1"}
		}
		n, err := coordinator.Start(context.Background(), o)
		if err != nil {
			b.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
		if i == 1 {
			waitUntil(b, 20*time.Second, n.IsLeader)
		}
	}
	waitUntil(b, 20*time.Second, func() bool { return len(c.nodes[0].Status().Voters) == voters })
	return c
}

func (c *inproc) conn(b testing.TB, name string) *nats.Conn {
	nc, err := natsutil.Connect(context.Background(), configs.NATS{}, c.srv, name)
	if err != nil {
		b.Fatal(err)
	}
	c.conns = append(c.conns, nc)
	return nc
}

func (c *inproc) close() {
	if c.srv == nil {
		return
	}
	defer func() { c.srv = nil }()
	for _, n := range c.nodes {
		n.Close()
	}
	for _, nc := range c.conns {
		nc.Close()
	}
	c.srv.Shutdown()
}

// leader waits for and returns the leading voter.
func (c *inproc) leader(b testing.TB) *coordinator.Node {
	var l *coordinator.Node
	waitUntil(b, 20*time.Second, func() bool {
		for _, n := range c.nodes {
			if n.IsLeader() {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

func waitUntil(b testing.TB, d time.Duration, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("condition not reached")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runWorkers starts n in-process workers with slots each; stop them with the returned func.
// The cluster is closed once (close is idempotent).
func (c *inproc) runWorkers(b testing.TB, job string, n, slots int, newProc func() (worker.FarmProcess, error)) func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		nc := c.conn(b, fmt.Sprintf("w%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker.RunMaskFarm(ctx, worker.FarmOptions{Conn: nc, Job: job, ID: fmt.Sprintf("w%d", i), Slots: slots,
				AckWait: 10 * time.Second, Heartbeat: time.Second, NewProcess: newProc})
		}()
	}
	return func() { cancel(); wg.Wait() }
}

func (c *inproc) waitDone(b testing.TB, total int) {
	b.Helper()
	for {
		var done int
		for _, n := range c.nodes {
			if n.IsLeader() {
				n.View(func(s *coordinator.State) { done = s.Counts[coordinator.TaskDone] + s.Counts[coordinator.TaskFailed] })
			}
		}
		if done >= total {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkCoordinator3Voters measures mask tasks dispatched and committed per second
// by a 3-voter coordinator (raft on loopback TCP, raft-boltdb with fsync) with in-process
// NATS and workers running a no-op segmenter: publish, fetch, lease, object put, commit,
// ack for every task.
func BenchmarkCoordinator3Voters(b *testing.B) {
	const perIter = 5000
	c := startInproc(b, 3, "bench")
	stop := c.runWorkers(b, "bench", 4, 32, noopProcess)
	defer stop()
	nc := c.conn(b, "submit")
	total := 0
	b.ResetTimer()
	start := time.Now()
	for it := 0; it < b.N; it++ {
		entries := make([]natsutil.ImageEntry, perIter)
		for i := range entries {
			id := fmt.Sprintf("it%d/img%06d", it, i)
			entries[i] = natsutil.ImageEntry{ID: id, Path: "/nonexistent/" + id, Size: 1, SHA256: fmt.Sprintf("%064x", it*perIter+i+1)}
		}
		if _, err := worker.SubmitMasks(context.Background(), nc, "bench", "h", entries); err != nil {
			b.Fatal(err)
		}
		total += perIter
		c.waitDone(b, total)
	}
	el := time.Since(start)
	b.ReportMetric(float64(total)/el.Seconds(), "tasks/s")
	b.ReportMetric(0, "ns/op")
}

// benchImages writes n PNGs of side px for the end-to-end comparison.
func benchImages(b *testing.B, n, px int) []dataset.Image {
	dir := filepath.Join(b.TempDir(), "img")
	writeImagesSized(b, dir, n, px)
	l, err := dataset.Discover(dir)
	if err != nil {
		b.Fatal(err)
	}
	return l.Images
}

// BenchmarkFarmVsLocal compares the same images segmented by the builtin segmenter
// through (local) worker.RunLocalMaskFarm, what `samdiffsr masks` runs, and (farm)
// what `samdiffsr run` runs: embedded NATS, a single-voter coordinator, one worker
// per core with two slots each, then the label maps exported to a folder.
func BenchmarkFarmVsLocal(b *testing.B) {
	images := benchImages(b, 48, 512)
	cores := runtime.GOMAXPROCS(0)
	newSeg := func(n int) func() (maskgen.Segmenter, error) {
		return func() (maskgen.Segmenter, error) {
			return maskgen.NewBuiltin(maskgen.BuiltinOptions{Sigma: 0.8, K: 500, MinSize: 1000, Threads: max(1, cores/n)})
		}
	}
	b.Run("local", func(b *testing.B) {
		var mi []worker.MaskImage
		for _, im := range images {
			mi = append(mi, worker.MaskImage{ID: im.ID, Path: im.HRPath})
		}
		for range b.N {
			_, err := worker.RunLocalMaskFarm(context.Background(), worker.LocalFarmOptions{Images: mi, Out: b.TempDir(), Workers: cores,
				NewSegmenter: newSeg(cores), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), ProgressOut: io.Discard})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(images)*b.N)/b.Elapsed().Seconds(), "images/s")
	})
	b.Run("farm", func(b *testing.B) {
		for it := range b.N {
			job := fmt.Sprintf("e2e%d", it)
			c := startInprocWith(b, 1, job, func(o *coordinator.Options) { o.ElectionTimeout = 100 * time.Millisecond })
			nc := c.conn(b, "submit")
			entries, err := worker.Manifest(context.Background(), images, cores)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := worker.SubmitMasks(context.Background(), nc, job, "h", entries); err != nil {
				b.Fatal(err)
			}
			seg := newSeg(2 * cores)
			stop := c.runWorkers(b, job, cores, 2, func() (worker.FarmProcess, error) {
				s, err := seg()
				if err != nil {
					return nil, err
				}
				return worker.NewFarmProcess(s, 0), nil
			})
			x, err := worker.NewMaskExporter(context.Background(), nc, job, b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			leader := c.leader(b)
			exp := worker.StartExportFollower(context.Background(), x, func() []natsutil.LedgerEntry {
				var out []natsutil.LedgerEntry
				leader.View(func(s *coordinator.State) {
					for id, t := range s.Tasks {
						if t.State == coordinator.TaskDone {
							out = append(out, natsutil.LedgerEntry{ID: id, Key: t.ResultKey, Digest: t.Digest})
						}
					}
				})
				return out
			}, 250*time.Millisecond)
			c.waitDone(b, len(images))
			if _, _, err := exp.Finish(context.Background()); err != nil {
				b.Fatal(err)
			}
			stop()
			c.close()
		}
		b.ReportMetric(float64(len(images)*b.N)/b.Elapsed().Seconds(), "images/s")
	})
}
