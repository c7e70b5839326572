// Package traintest runs distributed training as real processes on loopback — a
// coordinator (or three), training workers, NATS in the test process — and checks
// what users are promised when processes die, stop or come back.
package traintest

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/worker"
)

// binary is the samdiffsr binary TestMain builds (with the tags of this test binary's
// BLAS, passed through TRAINTEST_BUILD_TAGS by the Makefile when set).
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "samdiffsr-traintest-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "samdiffsr")
	args := []string{"build", "-o", binary}
	if tags := os.Getenv("TRAINTEST_BUILD_TAGS"); tags != "" {
		args = append(args, "-tags", tags)
	}
	build := exec.Command("go", append(args, "github.com/samdiffsr/samdiffsr/cmd/samdiffsr")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "traintest: build samdiffsr:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const job = "ddp"

// cluster is one test's world.
type cluster struct {
	t       *testing.T
	dir     string
	cfgFile string
	cfg     configs.Config
	srv     *server.Server
	port    int
	nc      *nats.Conn
	procs   map[string]*exec.Cmd
	raft    map[string]string
	run     string
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// trainYAML is the tiny configuration of the tests: a small RRDB and U-Net on
// 48x48 synthetic images, 8 RRDB steps, diffSteps diffusion steps; collectiveTimeout
// bounds a stuck peer.
func trainYAML(dir string, diffSteps int, admitEvery int, collectiveTimeout string) string {
	return fmt.Sprintf(`seed: 11
data:
  root: %[1]s/data/train
  val_root: %[1]s/data/val
  cache_dir: %[1]s/cache
  patch_size: 16
  tile_size: 48
  tile_threshold: 16
model:
  rrdb: {nf: 8, nb: 2, gc: 8}
  unet: {dim: 8, dim_mults: [1, 2]}
diffusion:
  modulation: none
masks:
  dir: %[1]s/masks
train:
  batch_size: 6
  steps: %[2]d
  lr: 0.001
  rrdb_batch_size: 6
  rrdb_steps: 8
  rrdb_lr: 0.001
  log_every: 10
  val_every: 0
  ckpt_every: 0
  keep_checkpoints: 0
cluster:
  nats: {job: %[3]s}
  worker: {heartbeat: 250ms, collective_timeout: %[5]s}
  train: {min_workers: 1, admit_every: %[4]d, regroup_grace: 1s, lost_after: 6s, ring_addr: "127.0.0.1:0"}
`, dir, diffSteps, job, admitEvery, collectiveTimeout)
}

func newCluster(t *testing.T, diffSteps, admitEvery int, collectiveTimeout string) *cluster {
	if testing.Short() {
		t.Skip("distributed training tests start real processes; skipped with -short")
	}
	c := &cluster{t: t, dir: t.TempDir(), procs: map[string]*exec.Cmd{}, raft: map[string]string{}}
	if _, _, err := dataset.WriteSynth(context.Background(), filepath.Join(c.dir, "data"), dataset.SynthOptions{N: 6, Val: 1, W: 48, H: 48, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	c.cfgFile = filepath.Join(c.dir, "train.yaml")
	if err := os.WriteFile(c.cfgFile, []byte(trainYAML(c.dir, diffSteps, admitEvery, collectiveTimeout)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.LoadFiles(c.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	c.cfg = cfg
	c.run = filepath.Join(c.dir, "run")
	c.port = freePort(t)
	srv, err := natsutil.StartEmbedded(context.Background(), natsutil.EmbeddedOptions{NATS: configs.NATS{Listen: fmt.Sprintf("127.0.0.1:%d", c.port), Job: job},
		StoreDir: filepath.Join(c.dir, "jetstream")})
	if err != nil {
		t.Fatal(err)
	}
	c.srv = srv
	nc, err := natsutil.Connect(context.Background(), configs.NATS{URL: c.url(), Job: job}, nil, "traintest")
	if err != nil {
		t.Fatal(err)
	}
	c.nc = nc
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", c.port) }

func (c *cluster) stopAll() {
	for name := range c.procs {
		c.signal(name, syscall.SIGCONT)
		c.kill(name)
	}
	c.nc.Close()
	c.srv.Shutdown()
	c.srv.WaitForShutdown()
	if c.t.Failed() {
		for _, n := range []string{"c1", "c2", "c3", "w1", "w2", "w3"} {
			if l := c.logOf(n); l != "" {
				c.t.Logf("log of %s:\n%s", n, tail(l, 4000))
			}
		}
	}
}

// start runs `samdiffsr args...` as process name, logging to <dir>/<name>.log.
func (c *cluster) start(name string, args ...string) {
	c.t.Helper()
	logf, err := os.OpenFile(filepath.Join(c.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	args = append(args, "--config", c.cfgFile, "--log-level", "info")
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "SAMDIFFSR_CONFIG=")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	logf.Close()
	c.procs[name] = cmd
}

func (c *cluster) signal(name string, sig syscall.Signal) {
	if p := c.procs[name]; p != nil {
		p.Process.Signal(sig)
	}
}

// kill sends SIGKILL (kill -9) to process name and reaps it.
func (c *cluster) kill(name string) {
	if p := c.procs[name]; p != nil {
		p.Process.Signal(syscall.SIGKILL)
		p.Wait()
		delete(c.procs, name)
	}
}

// wait waits for process name to exit by itself and returns its error.
func (c *cluster) wait(name string, timeout time.Duration) error {
	p := c.procs[name]
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	select {
	case err := <-done:
		delete(c.procs, name)
		return err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", name, timeout)
	}
}

func (c *cluster) logOf(name string) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, name+".log"))
	return string(b)
}

func (c *cluster) startCoordinator(id string, first bool) {
	if _, ok := c.raft[id]; !ok {
		c.raft[id] = fmt.Sprintf("127.0.0.1:%d", freePort(c.t))
	}
	args := []string{"coordinator", "--id", id, "--raft-addr", c.raft[id], "--data", filepath.Join(c.dir, id), "--nats", c.url()}
	if first {
		args = append(args, "--bootstrap")
	} else {
		args = append(args, "--join", "c1")
	}
	c.start(id, args...)
}

func (c *cluster) startTrainer(name string) {
	c.start(name, "worker", "--id", name, "--roles", "train", "--out", c.run, "--nats", c.url())
}

func (c *cluster) status() (natsutil.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return worker.FarmStatus(ctx, c.nc, job)
}

// waitFor polls the status until cond holds, failing the test after timeout.
func (c *cluster) waitFor(what string, timeout time.Duration, cond func(st natsutil.Status) bool) natsutil.Status {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last natsutil.Status
	var lastErr error
	for time.Now().Before(deadline) {
		st, err := c.status()
		if err == nil && cond(st) {
			return st
		}
		last, lastErr = st, err
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("timed out waiting for %s; last status %+v train %+v (err %v)", what, last, last.Train, lastErr)
	return last
}

// inDiffusionAt reports whether the status shows an active diffusion generation of
// world ranks at step ≥ step.
func inDiffusionAt(world int, step int64) func(st natsutil.Status) bool {
	return func(st natsutil.Status) bool {
		tr := st.Train
		return tr != nil && tr.Active && tr.Stage == natsutil.TrainStageDiffusion && len(tr.Ranks) == world && tr.Step >= step
	}
}

var firstStep = regexp.MustCompile(`first step of the generation applied.*?at_unix_ms=(\d+)`)

// recoveredAt returns the earliest "first step applied" time after t0 in the logs of
// names.
func (c *cluster) recoveredAt(t0 time.Time, names ...string) (time.Time, bool) {
	var best time.Time
	for _, n := range names {
		for _, m := range firstStep.FindAllStringSubmatch(c.logOf(n), -1) {
			ms, _ := strconv.ParseInt(m[1], 10, 64)
			at := time.UnixMilli(ms)
			if at.After(t0) && (best.IsZero() || at.Before(best)) {
				best = at
			}
		}
	}
	return best, !best.IsZero()
}

// waitRecovered waits until a survivor applied a step after t0 and returns how long
// after t0 that was.
func (c *cluster) waitRecovered(t0 time.Time, timeout time.Duration, names ...string) time.Duration {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if at, ok := c.recoveredAt(t0, names...); ok {
			return at.Sub(t0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("no survivor applied a step within %v of the fault", timeout)
	return 0
}

// reference trains the same configuration in one process (`samdiffsr train`, both
// stages) and returns its final diffusion checkpoint.
func (c *cluster) reference() *checkpoints.Checkpoint {
	c.t.Helper()
	ref := filepath.Join(c.dir, "reference")
	for _, stage := range []string{"rrdb", "diffusion"} {
		out, err := exec.Command(binary, "train", "--config", c.cfgFile, "--stage", stage, "--out", ref, "--log-level", "warn").CombinedOutput()
		if err != nil {
			c.t.Fatalf("reference %s: %v\n%s", stage, err, out)
		}
	}
	return c.final(ref)
}

// uninterrupted runs the same job with world local ranks and no fault through
// `samdiffsr run --workers world` (one process: embedded NATS, coordinator, ranks
// over the TCP ring on loopback) and returns its final diffusion checkpoint.
func (c *cluster) uninterrupted(world int) *checkpoints.Checkpoint {
	c.t.Helper()
	out := filepath.Join(c.dir, fmt.Sprintf("uninterrupted-%d", world))
	cmd := exec.Command(binary, "run", "--config", c.cfgFile, "--workers", strconv.Itoa(world), "--out", out,
		"--state", filepath.Join(out, "cluster"), "--log-level", "warn")
	cmd.Env = append(os.Environ(), "SAMDIFFSR_CONFIG=", fmt.Sprintf("SAMDIFFSR_CLUSTER_COORDINATOR_RAFT_ADDR=127.0.0.1:%d", freePort(c.t)))
	if b, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("run --workers %d: %v\n%s", world, err, b)
	}
	return c.final(out)
}

// waitLog waits until process name's log contains s.
func (c *cluster) waitLog(name, s string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(c.logOf(name), s) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("%s never logged %q:\n%s", name, s, tail(c.logOf(name), 3000))
}

// final loads the latest diffusion checkpoint of run.
func (c *cluster) final(run string) *checkpoints.Checkpoint {
	c.t.Helper()
	latest, err := checkpoints.Latest(worker.StageDir(run, worker.StageDiffusion))
	if err != nil {
		c.t.Fatal(err)
	}
	ck, err := checkpoints.Load(latest)
	if err != nil {
		c.t.Fatal(err)
	}
	return ck
}

// compareWeights fails unless every tensor of b is within tol of a's, relative to
// the tensor's largest magnitude; it returns the worst difference.
func compareWeights(t *testing.T, a, b *checkpoints.Checkpoint, tol float64) float64 {
	t.Helper()
	if a.Meta.Step != b.Meta.Step {
		t.Fatalf("final steps differ: %d vs %d", a.Meta.Step, b.Meta.Step)
	}
	worst, where := 0.0, ""
	for name, ta := range a.Model {
		tb, ok := b.Model[name]
		if !ok || len(tb.Data) != len(ta.Data) {
			t.Fatalf("tensor %s missing or reshaped", name)
		}
		scale, d := 0.0, 0.0
		for i := range ta.Data {
			scale = math.Max(scale, math.Abs(float64(ta.Data[i])))
			d = math.Max(d, math.Abs(float64(ta.Data[i])-float64(tb.Data[i])))
		}
		if scale > 0 && d/scale > worst {
			worst, where = d/scale, name
		}
	}
	if worst > tol {
		t.Errorf("final weights differ from the uninterrupted run by %.3g relative (%s), want ≤ %g", worst, where, tol)
	}
	return worst
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}
