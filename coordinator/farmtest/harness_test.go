package farmtest

import (
	"context"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/worker"
)

// binary is the samdiffsr binary TestMain builds.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "samdiffsr-farmtest-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "samdiffsr")
	build := exec.Command("go", "build", "-o", binary, "github.com/samdiffsr/samdiffsr/cmd/samdiffsr")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "farmtest: build samdiffsr:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	job      = "fault"
	natsUser = "farm"
	natsPass = "s3cret-pw"
)

// cluster is one test's world: NATS in this process, coordinator and worker processes.
type cluster struct {
	t       *testing.T
	dir     string
	cfgFile string
	natsCfg configs.NATS
	srv     *server.Server
	port    int
	nc      *nats.Conn
	procs   map[string]*exec.Cmd
	raft    map[string]string
	data    string
	images  int
	corrupt []string
	// metrics maps a process name to the address it serves /metrics on.
	metrics map[string]string
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

// newCluster starts NATS (with user/password auth) and writes n images (plus the
// corrupt ones named) and the config file.
func newCluster(t *testing.T, n int, corrupt ...string) *cluster {
	if testing.Short() {
		t.Skip("fault tests start real processes; skipped with -short")
	}
	c := &cluster{t: t, dir: t.TempDir(), procs: map[string]*exec.Cmd{}, raft: map[string]string{}, metrics: map[string]string{}, images: n, corrupt: corrupt}
	c.data = filepath.Join(c.dir, "data")
	writeImages(t, c.data, n, corrupt)
	c.cfgFile = filepath.Join(c.dir, "farm.yaml")
	cfg := `masks:
  segmenter: builtin
  builtin: {sigma: 0.8, k: 300, min_size: 20}
cluster:
  nats: {job: ` + job + `, user: ` + natsUser + `}
  coordinator: {max_deliver: 3, lease_ttl: 20s}
  worker: {ack_wait: 2s, heartbeat: 500ms}
`
	if err := os.WriteFile(c.cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.port = freePort(t)
	c.natsCfg = configs.NATS{Listen: fmt.Sprintf("127.0.0.1:%d", c.port), User: natsUser, Password: natsPass, Job: job}
	c.startNATS()
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", c.port) }

func (c *cluster) startNATS() {
	c.t.Helper()
	srv, err := natsutil.StartEmbedded(context.Background(), natsutil.EmbeddedOptions{NATS: c.natsCfg, StoreDir: filepath.Join(c.dir, "jetstream")})
	if err != nil {
		c.t.Fatal(err)
	}
	c.srv = srv
	cli := c.natsCfg
	cli.URL = c.url()
	nc, err := natsutil.Connect(context.Background(), cli, nil, "farmtest")
	if err != nil {
		c.t.Fatal(err)
	}
	c.nc = nc
}

func (c *cluster) stopNATS() {
	if c.nc != nil {
		c.nc.Close()
		c.nc = nil
	}
	if c.srv != nil {
		c.srv.Shutdown()
		c.srv.WaitForShutdown()
		c.srv = nil
	}
}

func (c *cluster) stopAll() {
	for name := range c.procs {
		c.kill(name)
	}
	c.stopNATS()
}

// start runs `samdiffsr args...` as process name, logging to <dir>/<name>.log.
func (c *cluster) start(name string, args ...string) {
	c.t.Helper()
	logf, err := os.OpenFile(filepath.Join(c.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	args = append(args, "--config", c.cfgFile, "--nats", c.url(), "--log-level", "info")
	if m := c.metrics[name]; m != "" {
		args = append(args, "--metrics-addr", m)
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "SAMDIFFSR_CLUSTER_NATS_PASSWORD="+natsPass, "SAMDIFFSR_CONFIG=")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	logf.Close()
	c.procs[name] = cmd
}

// kill sends SIGKILL (kill -9) to process name and reaps it.
func (c *cluster) kill(name string) {
	if p := c.procs[name]; p != nil {
		p.Process.Signal(syscall.SIGKILL)
		p.Wait()
		delete(c.procs, name)
	}
}

func (c *cluster) logOf(name string) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, name+".log"))
	return string(b)
}

// startCoordinator starts voter id; the first bootstraps, the others join c1.
func (c *cluster) startCoordinator(id string, first bool) {
	if _, ok := c.raft[id]; !ok {
		c.raft[id] = fmt.Sprintf("127.0.0.1:%d", freePort(c.t))
	}
	args := []string{"coordinator", "--id", id, "--raft-addr", c.raft[id], "--data", filepath.Join(c.dir, id)}
	if first {
		args = append(args, "--bootstrap")
	} else {
		args = append(args, "--join", "c1")
	}
	c.start(id, args...)
}

// startVoters starts a 3-voter coordinator and waits until all three are voters.
func (c *cluster) startVoters() {
	c.t.Helper()
	c.startCoordinator("c1", true)
	c.waitFor("c1 leads", 30*time.Second, func(st natsutil.Status) bool { return st.Leader == "c1" })
	c.startCoordinator("c2", false)
	c.startCoordinator("c3", false)
	c.waitFor("3 voters", 30*time.Second, func(st natsutil.Status) bool { return len(st.Voters) == 3 && st.Leader != "" })
}

func (c *cluster) submit() {
	c.t.Helper()
	out, err := exec.Command(binary, "coordinator", "submit", "--data", c.data, "--config", c.cfgFile, "--nats", c.url(),
		"--nats-password", natsPass).CombinedOutput()
	if err != nil {
		c.t.Fatalf("submit: %v\n%s", err, out)
	}
}

func (c *cluster) startWorkers(n int) {
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("w%d", i)
		c.start(name, "worker", "--id", name, "--roles", "mask")
	}
}

// scrape returns the /metrics page of process name.
func (c *cluster) scrape(name string) string {
	c.t.Helper()
	resp, err := http.Get("http://" + c.metrics[name] + "/metrics")
	if err != nil {
		c.t.Fatalf("metrics of %s: %v", name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// status asks any voter.
func (c *cluster) status() (natsutil.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
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
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("timed out waiting for %s; last status %+v (err %v)\nlogs of c1:\n%s", what, last, lastErr, tail(c.logOf("c1"), 3000))
	return last
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// farmDone waits until every task is final.
func (c *cluster) farmDone(timeout time.Duration) natsutil.Status {
	c.t.Helper()
	total := c.images + len(c.corrupt)
	return c.waitFor("farm done", timeout, func(st natsutil.Status) bool {
		return st.Masks.Total == total && st.Masks.Done+st.Masks.Failed == total
	})
}

func (c *cluster) ledger() []natsutil.LedgerEntry {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := worker.Ledger(ctx, c.nc, job, "")
	if err != nil {
		c.t.Fatal(err)
	}
	return l
}

// checkExactlyOnce checks the end state: every good image done once with an object
// whose digest the ledger holds, every corrupt one failed after max_deliver attempts
// with its reason, no object that is not a done task's result, and an empty queue.
func (c *cluster) checkExactlyOnce() map[string]natsutil.LedgerEntry {
	c.t.Helper()
	t := c.t
	// Any voter answers ledger requests, and a follower may lag the leader that
	// reported the farm done by a few entries: wait until the copy read has every
	// task final (bounded), then check it.
	var ledger []natsutil.LedgerEntry
	for deadline := time.Now().Add(20 * time.Second); ; {
		ledger = c.ledger()
		final := 0
		for _, e := range ledger {
			if e.State == "done" || e.State == "failed" {
				final++
			}
		}
		if final == c.images+len(c.corrupt) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	byID := map[string]natsutil.LedgerEntry{}
	for _, e := range ledger {
		if _, dup := byID[e.ID]; dup {
			t.Errorf("task %s twice in the ledger", e.ID)
		}
		byID[e.ID] = e
	}
	if len(byID) != c.images+len(c.corrupt) {
		t.Errorf("ledger has %d tasks, want %d", len(byID), c.images+len(c.corrupt))
	}
	bad := map[string]bool{}
	for _, id := range c.corrupt {
		bad[id] = true
		e := byID[id]
		if e.State != "failed" || e.Attempts != 3 || !strings.Contains(e.Reason, id+".png") ||
			!(strings.Contains(e.Reason, "decode") || strings.Contains(e.Reason, "corrupt")) {
			t.Errorf("corrupt image %s: %+v; want failed after 3 attempts, the reason naming the file as corrupt", id, e)
		}
	}
	keys := map[string]string{} // object key -> digest
	for id, e := range byID {
		if bad[id] {
			continue
		}
		if e.State != "done" || e.Key == "" || e.Digest == "" || e.DoneIndex == 0 {
			t.Errorf("task %s: %+v, want done with a result", id, e)
		}
		keys[e.Key] = e.Digest
	}
	js, _ := jetstream.New(c.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store, err := js.ObjectStore(ctx, natsutil.NamesFor(job).MaskBucket())
	if err != nil {
		t.Fatal(err)
	}
	objs, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, o := range objs {
		seen[o.Name] = true
		if _, ok := keys[o.Name]; !ok {
			t.Errorf("orphan object %s in the mask bucket", o.Name)
		}
	}
	for k := range keys {
		if !seen[k] {
			t.Errorf("done task's object %s missing", k)
		}
	}
	// Each commit of "done" counts once for its worker: a result applied twice would
	// show here even though the task's state looks the same.
	// (Status too may come from a follower a few entries behind: poll, bounded.)
	workersDone := func(st natsutil.Status) int {
		sum := 0
		for _, w := range st.Workers {
			sum += w.Done
		}
		return sum
	}
	st := c.waitFor("every result counted once", 20*time.Second, func(st natsutil.Status) bool {
		return workersDone(st) >= c.images && st.Masks.Done >= c.images
	})
	if sum := workersDone(st); sum != c.images || st.Masks.Done != c.images {
		t.Errorf("workers committed %d results and the ledger counts %d done; want %d each", sum, st.Masks.Done, c.images)
	}
	t.Logf("duplicate reports recognised and ignored: %d", st.Masks.Duplicates)
	// Label maps pull back intact (digests checked by PullMasks).
	out := filepath.Join(c.dir, "pulled")
	written, _, err := worker.PullMasks(ctx, c.nc, job, out)
	if err != nil || written != c.images {
		t.Errorf("pull: wrote %d of %d: %v", written, c.images, err)
	}
	// The ledger is the truth; the queue ends empty once the leader reconciled.
	stream, err := js.Stream(ctx, natsutil.NamesFor(job).TaskStream())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := stream.Info(ctx)
		if err == nil && info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("task stream still holds messages after the farm: %+v %v", info.State, err)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return byID
}

// writeImages writes n small PNGs with coloured blocks, and corrupt files.
func writeImages(t testing.TB, dir string, n int, corrupt []string) {
	t.Helper()
	writeImagesSized(t, dir, n, 96)
	r := rand.New(rand.NewSource(7))
	for _, id := range corrupt {
		junk := make([]byte, 700)
		r.Read(junk)
		copy(junk, "\x89PNG\r\n\x1a\n") // a PNG signature, then garbage
		if err := os.WriteFile(filepath.Join(dir, id+".png"), junk, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeImagesSized writes n PNGs of side px with coloured blocks and a little noise.
func writeImagesSized(t testing.TB, dir string, n, px int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewSource(42))
	for i := range n {
		img := image.NewRGBA(image.Rect(0, 0, px, px))
		for b := 0; b < 8; b++ {
			col := color.RGBA{uint8(r.Intn(256)), uint8(r.Intn(256)), uint8(r.Intn(256)), 255}
			x0, y0, w, h := r.Intn(px-16), r.Intn(px-16), 8+r.Intn(px/2), 8+r.Intn(px/2)
			for y := y0; y < min(px, y0+h); y++ {
				for x := x0; x < min(px, x0+w); x++ {
					img.Set(x, y, col)
				}
			}
		}
		// Noise makes each image distinct (distinct SHA-256 keys).
		for k := 0; k < 50; k++ {
			img.Set(r.Intn(px), r.Intn(px), color.RGBA{uint8(r.Intn(256)), 0, 0, 255})
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("img%04d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(f, img); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}
