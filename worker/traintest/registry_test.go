package traintest

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

// TestWatchPullsEveryCheckpointOnce: a training worker publishes a checkpoint
// every 20 steps to the registry; `checkpoints watch --pull`, started before
// training, is killed with SIGKILL mid-run and started again. Across both runs it
// prints every committed checkpoint exactly once, in commit order, and every
// pulled file has the SHA-256 the registry committed.
func TestWatchPullsEveryCheckpointOnce(t *testing.T) {
	c := newCluster(t, 200, 0, "3s")
	cfgText, err := os.ReadFile(c.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	cfgText = []byte(strings.Replace(string(cfgText), "ckpt_every: 0", "ckpt_every: 20", 1))
	if err := os.WriteFile(c.cfgFile, cfgText, 0o644); err != nil {
		t.Fatal(err)
	}
	c.startCoordinator("c1", true)
	c.waitFor("c1 leads", 30*time.Second, func(st natsutil.Status) bool { return st.Leader == "c1" })
	pulled := filepath.Join(c.dir, "pulled")
	cache := filepath.Join(c.dir, "ckpt-cache")
	watch := func(name string) {
		c.start(name, "checkpoints", "watch", "--nats", c.url(), "--pull", "--out", pulled, "--cache", cache, "--json", "--interval", "300ms")
	}
	watch("watch1")
	c.startTrainer("w1")

	// Kill the watcher once it has handled a few checkpoints, while training goes on.
	deadline := time.Now().Add(2 * time.Minute)
	for len(watchRecords(t, c, "watch1")) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("watch1 printed %d records in 2 minutes:\n%s", len(watchRecords(t, c, "watch1")), tail(c.logOf("watch1"), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.kill("watch1")
	before := len(watchRecords(t, c, "watch1"))
	t.Logf("watch killed after %d checkpoints", before)
	time.Sleep(time.Second) // commits happen meanwhile
	watch("watch2")

	if err := c.wait("w1", 3*time.Minute); err != nil {
		t.Fatalf("w1: %v\n%s", err, tail(c.logOf("w1"), 3000))
	}
	reg, err := checkpoints.NewRegistry(c.nc, job)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := reg.List(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Checkpoints) < 8 {
		t.Fatalf("only %d checkpoints committed: %+v", len(l.Checkpoints), l)
	}
	last := l.Checkpoints[len(l.Checkpoints)-1].Seq
	for time.Now().Before(deadline.Add(time.Minute)) {
		if recs := watchRecords(t, c, "watch2"); len(recs) > 0 && recs[len(recs)-1].Seq == last {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.signal("watch2", syscall.SIGINT)
	if err := c.wait("watch2", 10*time.Second); err != nil {
		t.Errorf("watch2 after SIGINT: %v", err)
	}

	var seqs []uint64
	var printed []natsutil.CheckpointInfo
	for _, n := range []string{"watch1", "watch2"} {
		for _, r := range watchRecords(t, c, n) {
			seqs = append(seqs, r.Seq)
			printed = append(printed, r)
		}
	}
	var want []uint64
	for _, r := range l.Checkpoints {
		want = append(want, r.Seq)
	}
	if !slices.Equal(seqs, want) {
		t.Fatalf("watch printed seqs %v across its two runs, want each committed one once: %v", seqs, want)
	}
	t.Logf("%d checkpoints committed, each printed once (%d before the kill, %d after)", len(want), before, len(want)-before)
	for _, r := range printed {
		dir := filepath.Join(pulled, r.Stage, checkpoints.SubDir, filepath.Base(r.ID))
		for _, f := range r.Files {
			sum, size, err := fsutil.FileSHA256(filepath.Join(dir, f.Name))
			if err != nil || sum != f.SHA256 || size != f.Size {
				t.Errorf("%s/%s: sha256 %s (%d bytes), registry %s (%d): %v", dir, f.Name, sum, size, f.SHA256, f.Size, err)
			}
		}
		if _, err := checkpoints.Verify(dir); err != nil {
			t.Errorf("pulled %s: %v", dir, err)
		}
	}

	// A consumer super-resolves straight from the registry reference.
	val, err := filepath.Glob(filepath.Join(c.dir, "data", "val", "*.png"))
	if err != nil || len(val) == 0 {
		t.Fatalf("no validation image: %v", err)
	}
	srOut := filepath.Join(c.dir, "sr.png")
	sr := exec.Command(binary, "sr", "--checkpoint", c.url()+"/"+job+"@latest", "--in", val[0], "--out", srOut, "--config", c.cfgFile, "--log-level", "info")
	sr.Env = append(os.Environ(), "SAMDIFFSR_CONFIG=", "XDG_CACHE_HOME="+filepath.Join(c.dir, "xdg"))
	if b, err := sr.CombinedOutput(); err != nil {
		t.Fatalf("sr from the registry: %v\n%s", err, tail(string(b), 3000))
	} else if !strings.Contains(string(b), l.Checkpoints[len(l.Checkpoints)-1].ID) {
		t.Errorf("sr did not say which registry checkpoint it used:\n%s", tail(string(b), 2000))
	}
	if st, err := os.Stat(srOut); err != nil || st.Size() == 0 {
		t.Fatalf("sr wrote no image: %v", err)
	}
}

// watchRecords parses the JSON records a watch process printed (its log also holds
// log lines, which are not JSON).
func watchRecords(t *testing.T, c *cluster, name string) []natsutil.CheckpointInfo {
	t.Helper()
	f, err := os.Open(filepath.Join(c.dir, name+".log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []natsutil.CheckpointInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var r natsutil.CheckpointInfo
		if err := json.Unmarshal(line, &r); err == nil && r.ID != "" {
			out = append(out, r)
		}
	}
	return out
}
