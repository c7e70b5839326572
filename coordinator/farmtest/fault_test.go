package farmtest

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/internal/natsutil"
)

const images = 300

// progressed waits until at least n tasks are final and the farm is not finished.
func (c *cluster) progressed(n int) natsutil.Status {
	c.t.Helper()
	return c.waitFor("farm under way", 60*time.Second, func(st natsutil.Status) bool {
		return st.Masks.Done+st.Masks.Failed >= n
	})
}

// midFarm fails the test when the farm had already finished: the fault would not
// have hit a running farm.
func (c *cluster) midFarm(st natsutil.Status) {
	c.t.Helper()
	if st.Masks.Done+st.Masks.Failed >= st.Masks.Total {
		c.t.Fatalf("farm finished before the fault was injected (%+v); the test needs a slower farm", st.Masks)
	}
}

// (a) kill -9 a worker mid-farm: every image done, once; no orphan objects.
func TestKillWorker(t *testing.T) {
	c := newCluster(t, images)
	c.metrics["c1"] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.metrics["w1"] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.startVoters()
	c.submit()
	c.startWorkers(3)
	c.progressed(images / 5)
	c.kill("w2")
	st, _ := c.status()
	c.midFarm(st)
	t.Logf("killed w2 at %d/%d done", st.Masks.Done, st.Masks.Total)
	st = c.farmDone(90 * time.Second)
	if st.Masks.Done != images || st.Masks.Failed != 0 {
		t.Errorf("masks %+v: want %d done, 0 failed", st.Masks, images)
	}
	c.checkExactlyOnce()
	// Prometheus metrics of the coordinator (the ledger as c1 sees it) and a worker.
	if m := c.scrape("c1"); !strings.Contains(m, fmt.Sprintf(`samdiffsr_mask_tasks{state="done"} %d`, images)) {
		t.Errorf("c1 /metrics lacks %d done tasks:\n%s", images, grepLines(m, "samdiffsr_"))
	}
	if m := c.scrape("w1"); !strings.Contains(m, `samdiffsr_worker_mask_tasks_total{outcome="done"}`) {
		t.Errorf("w1 /metrics lacks its task counter:\n%s", grepLines(m, "samdiffsr_"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// (b) kill -9 the raft leader mid-farm: a new leader within seconds; the farm
// completes, each task done once.
func TestKillLeader(t *testing.T) {
	c := newCluster(t, images)
	c.startVoters()
	c.submit()
	c.startWorkers(3)
	st := c.progressed(images / 5)
	// The leader answered this status just before the kill; after it, status may come
	// from a follower or from no leader at all, so judge "mid-farm" from this one.
	c.midFarm(st)
	old := st.Leader
	c.kill(old)
	killed := time.Now()
	st = c.waitFor("a new leader", 20*time.Second, func(st natsutil.Status) bool { return st.Leader != "" && st.Leader != old })
	t.Logf("killed leader %s at %d/%d done; %s leads after %v", old, st.Masks.Done, st.Masks.Total, st.Leader, time.Since(killed).Round(10*time.Millisecond))
	st = c.farmDone(90 * time.Second)
	if st.Masks.Done != images || st.Masks.Failed != 0 {
		t.Errorf("masks %+v: want %d done, 0 failed", st.Masks, images)
	}
	c.checkExactlyOnce()
}

// (c) stop everything mid-farm (workers, voters and NATS) and restart: the farm
// resumes and nothing done before the stop is done again.
func TestStopAllAndResume(t *testing.T) {
	c := newCluster(t, images)
	c.startVoters()
	c.submit()
	c.startWorkers(3)
	c.progressed(images / 4)
	for _, w := range []string{"w1", "w2", "w3"} {
		c.kill(w)
	}
	before := map[string]natsutil.LedgerEntry{}
	for _, e := range c.ledger() {
		if e.State == "done" {
			before[e.ID] = e
		}
	}
	if len(before) == 0 || len(before) >= images {
		t.Fatalf("%d of %d done at the stop; want a farm under way", len(before), images)
	}
	for _, v := range []string{"c1", "c2", "c3"} {
		c.kill(v)
	}
	c.stopNATS()
	t.Logf("stopped everything with %d/%d done", len(before), images)

	c.startNATS()
	for _, v := range []string{"c1", "c2", "c3"} {
		c.start(v, "coordinator", "--id", v, "--raft-addr", c.raft[v], "--data", c.dir+"/"+v)
	}
	c.waitFor("a leader after restart", 30*time.Second, func(st natsutil.Status) bool { return st.Leader != "" && len(st.Voters) == 3 })
	c.startWorkers(3)
	st := c.farmDone(90 * time.Second)
	if st.Masks.Done != images {
		t.Errorf("masks %+v: want %d done", st.Masks, images)
	}
	after := c.checkExactlyOnce()
	for id, b := range before {
		a := after[id]
		if a.DoneIndex != b.DoneIndex || a.Worker != b.Worker || a.Attempts != b.Attempts || a.Duplicates != b.Duplicates || a.Digest != b.Digest {
			t.Errorf("task %s was touched again after the restart: before %+v, after %+v", id, b, a)
		}
	}
}

// (d) corrupt images: failed with their reason after max_deliver attempts; the rest done.
func TestCorruptImage(t *testing.T) {
	c := newCluster(t, 60, "broken1", "broken2")
	c.startVoters()
	c.submit()
	c.startWorkers(3)
	st := c.farmDone(90 * time.Second)
	if st.Masks.Done != 60 || st.Masks.Failed != 2 || len(st.Failures) != 2 {
		t.Errorf("masks %+v failures %+v: want 60 done, 2 failed", st.Masks, st.Failures)
	}
	c.checkExactlyOnce()
}

// A worker without valid NATS credentials is refused.
func TestWorkerWithoutCredentialsRefused(t *testing.T) {
	c := newCluster(t, 1)
	for _, tc := range []struct{ name, pw string }{{"no password", ""}, {"wrong password", "guess"}} {
		cmd := exec.Command(binary, "worker", "--nats", c.url(), "--config", c.cfgFile, "--nats-password", tc.pw)
		cmd.Env = []string{"SAMDIFFSR_CONFIG=", "HOME=" + c.dir}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(strings.ToLower(string(out)), "authorization") {
			t.Errorf("%s: worker not refused: err %v, output %s", tc.name, err, out)
		}
	}
	// The right password connects (the refusal above is about credentials, not the URL).
	cmd := exec.Command(binary, "status", "--nats", c.url(), "--config", c.cfgFile, "--nats-password", natsPass)
	cmd.Env = []string{"SAMDIFFSR_CONFIG=", "HOME=" + c.dir}
	out, err := cmd.CombinedOutput()
	if !strings.Contains(string(out), "no coordinator") && !strings.Contains(string(out), "no responders") {
		t.Errorf("status with the right password: %v %s; want it connected (and no coordinator to answer)", err, out)
	}
}
