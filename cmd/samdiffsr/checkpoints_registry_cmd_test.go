package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/coordinator"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore/objstoretest"
)

// registryWorld is an embedded NATS server on a loopback port and a single-voter
// coordinator of job "reg": what the registry commands talk to.
type registryWorld struct {
	t   testing.TB
	url string
	nc  *nats.Conn
	reg *checkpoints.Registry
	dir string
}

const regJob = "reg"

func startRegistryWorld(t testing.TB) *registryWorld {
	t.Helper()
	dir := t.TempDir()
	srv, err := natsutil.StartEmbedded(context.Background(), natsutil.EmbeddedOptions{
		NATS: configs.NATS{Listen: "127.0.0.1:0"}, StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	w := &registryWorld{t: t, url: natsutil.ClientURL(srv), dir: dir}
	conn := func(name string) *nats.Conn {
		nc, err := natsutil.Connect(context.Background(), configs.NATS{URL: w.url}, nil, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := ln.Addr().String()
	ln.Close()
	node, err := coordinator.Start(context.Background(), coordinator.Options{ID: "c1", RaftAddr: raftAddr, DataDir: filepath.Join(dir, "c1"),
		Bootstrap: true, Conn: conn("c1"), Job: regJob, ElectionTimeout: 300 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for !node.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leadership")
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.nc = conn("writer")
	if w.reg, err = checkpoints.NewRegistry(w.nc, regJob); err != nil {
		t.Fatal(err)
	}
	return w
}

// save writes a small checkpoint folder of stage at step (weights depend on step).
func (w *registryWorld) save(stage string, step int64, psnr float64) string {
	w.t.Helper()
	dir := filepath.Join(w.dir, "run", stage, checkpoints.SubDir, checkpoints.DirName(step))
	data := make([]float32, 64)
	for i := range data {
		data[i] = float32(step)*0.5 + float32(i)
	}
	meta := checkpoints.Meta{Step: step, Stage: stage, ConfigHash: "cafe", Modulation: "paper"}
	if psnr > 0 {
		meta.Metrics = map[string]float64{"val_psnr_y": psnr, "val_ssim_y": 0.5}
	}
	ck := checkpoints.Checkpoint{Meta: meta, Model: map[string]checkpoints.Tensor{"w": {Shape: []int{8, 8}, Data: data}},
		Optimizer: map[string]checkpoints.Tensor{"w.m": {Shape: []int{64}, Data: data}}, OptimizerMeta: map[string]string{"adam_step": fmt.Sprint(step)}}
	if err := checkpoints.Save(dir, ck); err != nil {
		w.t.Fatal(err)
	}
	return dir
}

var testRetention = natsutil.CheckpointRetention{KeepLast: 2, KeepEvery: 4, KeepBest: true}

func (w *registryWorld) publish(dir string) natsutil.Reply {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := w.reg.Publish(ctx, dir, testRetention, "test-writer")
	if err != nil {
		w.t.Fatalf("publish %s: %v", dir, err)
	}
	return rep
}

func (w *registryWorld) cli(args ...string) (string, string, int) {
	w.t.Helper()
	return runCLI(w.t.(*testing.T), append(args, "--nats", w.url, "--job", regJob)...)
}

func (w *registryWorld) listIDs() []string {
	w.t.Helper()
	out, errs, code := w.cli("checkpoints", "list", "--json")
	if code != 0 {
		w.t.Fatalf("list: exit %d: %s", code, errs)
	}
	var l natsutil.CheckpointList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		w.t.Fatalf("list --json: %v\n%s", err, out)
	}
	var ids []string
	for _, c := range l.Checkpoints {
		ids = append(ids, c.ID)
	}
	return ids
}

func stepID(step int64) string { return "diffusion/" + checkpoints.DirName(step) }

// TestRegistryRetentionBestPullAndCache: retention keeps exactly the last 2,
// every 4th and the best (also in the bucket); --best resolves to the highest
// PSNR-Y; a pull verifies and a second pull transfers nothing; a tag protects a
// checkpoint from pruning; a registry reference resolves to a pulled folder.
func TestRegistryRetentionBestPullAndCache(t *testing.T) {
	w := startRegistryWorld(t)
	psnr := []float64{0, 20, 21, 26.5, 22, 23, 24, 23.5, 22.5}
	for step := int64(1); step <= 8; step++ {
		rep := w.publish(w.save("diffusion", step, psnr[step]))
		if rep.Seq != uint64(step) {
			t.Fatalf("step %d committed as seq %d", step, rep.Seq)
		}
	}
	want := []string{stepID(3), stepID(4), stepID(7), stepID(8)}
	if got := w.listIDs(); !slices.Equal(got, want) {
		t.Fatalf("registry after retention %v, want %v (best 3, every 4th 4 and 8, last two 7 and 8)", got, want)
	}
	// Pruned checkpoints' objects are gone from the bucket: 4 checkpoints × 3 files.
	js, _ := jetstream.New(w.nc)
	obs, err := js.ObjectStore(context.Background(), natsutil.NamesFor(regJob).CheckpointBucket())
	if err != nil {
		t.Fatal(err)
	}
	infos, _ := obs.List(context.Background())
	if len(infos) != 12 {
		t.Errorf("bucket holds %d objects, want 12 (pruned ones deleted)", len(infos))
	}
	// Republishing a committed checkpoint (a retried upload) is a no-op.
	if rep := w.publish(w.save("diffusion", 8, psnr[8])); rep.Outcome != "duplicate" || rep.Seq != 8 {
		t.Fatalf("repeat publish: %+v", rep)
	}

	cache := filepath.Join(w.dir, "cache")
	out := filepath.Join(w.dir, "pulled", "best")
	stdout, errs, code := w.cli("checkpoints", "pull", "--best", "--out", out, "--cache", cache)
	if code != 0 {
		t.Fatalf("pull --best: exit %d: %s", code, errs)
	}
	if !strings.Contains(stdout, stepID(3)) || !strings.Contains(stdout, "3 files fetched") {
		t.Errorf("pull output %q", stdout)
	}
	ck, err := checkpoints.Load(out)
	if err != nil || ck.Meta.Step != 3 {
		t.Fatalf("pulled best: %v (step %v)", err, ck)
	}
	stdout, _, code = w.cli("checkpoints", "pull", "--best", "--out", out, "--cache", cache)
	if code != 0 || !strings.Contains(stdout, "nothing transferred") {
		t.Errorf("second pull to the same folder: exit %d %q", code, stdout)
	}
	stdout, _, code = w.cli("checkpoints", "pull", "--step", "3", "--out", filepath.Join(w.dir, "pulled", "again"), "--cache", cache)
	if code != 0 || !strings.Contains(stdout, "0 files fetched (0 bytes), 3 from the cache") {
		t.Errorf("pull of a cached checkpoint elsewhere: exit %d %q", code, stdout)
	}
	if _, errs, code := w.cli("checkpoints", "pull", "--step", "5", "--out", filepath.Join(w.dir, "x"), "--cache", cache); code == 0 || !strings.Contains(errs, "step 5") {
		t.Errorf("pull of a pruned step: exit %d %q", code, errs)
	}

	// A tag keeps step 7 through later retention.
	if _, errs, code := w.cli("checkpoints", "tag", "champion", stepID(7)); code != 0 {
		t.Fatalf("tag: %s", errs)
	}
	for step := int64(9); step <= 11; step++ {
		w.publish(w.save("diffusion", step, 20))
	}
	want = []string{stepID(3), stepID(4), stepID(7), stepID(8), stepID(10), stepID(11)}
	if got := w.listIDs(); !slices.Equal(got, want) {
		t.Fatalf("after tagging 7: %v, want %v", got, want)
	}
	stdout, _, _ = w.cli("checkpoints", "list")
	for _, s := range []string{"champion", "best", "latest", "26.500"} {
		if !strings.Contains(stdout, s) {
			t.Errorf("list lacks %q:\n%s", s, stdout)
		}
	}

	// A registry reference, as sr and eval take it, pulls through the cache.
	t.Setenv("XDG_CACHE_HOME", filepath.Join(w.dir, "xdg"))
	cfg, _ := configs.LoadFiles()
	dir, err := resolveCheckpointRef(context.Background(), cfg, w.url+"/"+regJob+"@champion", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if ck, err := checkpoints.Load(dir); err != nil || ck.Meta.Step != 7 {
		t.Fatalf("reference @champion: %s: %v", dir, err)
	}
	if _, err := resolveCheckpointRef(context.Background(), cfg, w.url+"/"+regJob+"@nope", slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil ||
		!strings.Contains(err.Error(), `no alias "nope"`) {
		t.Errorf("unknown alias: %v", err)
	}
}

// TestRegistryCorruptObjectAndHalfUpload: bytes flipped in the bucket fail the
// pull with an error naming the file and both digests and leave the destination as
// it was; a checkpoint whose upload stopped halfway is never listed, even when a
// publish request is sent for it.
func TestRegistryCorruptObjectAndHalfUpload(t *testing.T) {
	w := startRegistryWorld(t)
	src := w.save("diffusion", 5, 25)
	w.publish(src)
	sum, _, err := fsutil.FileSHA256(filepath.Join(src, checkpoints.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(w.nc)
	if err := objstoretest.FlipByte(context.Background(), js, natsutil.NamesFor(regJob).CheckpointBucket(), natsutil.CheckpointObject(sum), 100); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(w.dir, "dest")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "keep.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(w.dir, "cache")
	_, errs, code := w.cli("checkpoints", "pull", "--latest", "--out", out, "--cache", cache)
	if code == 0 {
		t.Fatal("pull of a corrupted object succeeded")
	}
	for _, s := range []string{checkpoints.ModelFile, sum, "SHA-256", out + " was left as it was"} {
		if !strings.Contains(errs, s) {
			t.Errorf("error lacks %q: %s", s, errs)
		}
	}
	if b, err := os.ReadFile(filepath.Join(out, "keep.txt")); err != nil || string(b) != "mine" {
		t.Error("the destination changed after a failed pull")
	}
	if ents, _ := os.ReadDir(out); len(ents) != 1 {
		t.Errorf("destination holds %d entries after a failed pull", len(ents))
	}
	if _, err := os.Stat(filepath.Join(cache, "sha256", sum)); err == nil {
		t.Error("the corrupted file entered the cache")
	}

	// Half an upload: the model file is in the bucket, the rest is not.
	half := w.save("diffusion", 6, 26)
	info, err := checkpoints.Describe(half)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.ObjectStore(context.Background(), natsutil.NamesFor(regJob).CheckpointBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutFile(context.Background(), filepath.Join(half, checkpoints.ModelFile)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = natsutil.RequestLeader(ctx, w.nc, natsutil.NamesFor(regJob).Coord("checkpoints.publish"),
		natsutil.CheckpointPublish{Checkpoint: info, Retention: testRetention}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "not in bucket") {
		t.Errorf("publish of a half-uploaded checkpoint: %v", err)
	}
	if got := w.listIDs(); !slices.Equal(got, []string{stepID(5)}) {
		t.Errorf("registry lists %v, want only the complete checkpoint", got)
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want checkpoints.Selector
		err  string
	}{
		{in: "nats://h:4222/job@best", want: checkpoints.Selector{Alias: "best"}},
		{in: "nats://h:4222/job", want: checkpoints.Selector{Alias: "latest"}},
		{in: "tls://h:4222/job@rrdb:latest", want: checkpoints.Selector{Alias: "latest", Stage: "rrdb"}},
		{in: "nats://h:4222/job@step=400", want: checkpoints.Selector{Step: 400, HasStep: true}},
		{in: "nats://h:4222/job@diffusion/step_000000400", want: checkpoints.Selector{ID: "diffusion/step_000000400"}},
		{in: "nats://h:4222/job@step=x", err: "not a step number"},
		{in: "nats://h:4222", err: "JOB@SELECTOR"},
	} {
		r, err := checkpoints.ParseRef(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.Sel != tc.want || r.Job != "job" {
			t.Errorf("%s: %+v %v", tc.in, r, err)
		}
	}
	if _, err := checkpoints.ParseRef("runs/x/diffusion"); err != checkpoints.ErrNotRegistryRef {
		t.Errorf("a folder is not a reference: %v", err)
	}
}

// TestTrainPublishesToRegistry: `samdiffsr train` with cluster.nats.url set
// publishes each checkpoint it writes; with an unreachable server it says so and
// trains all the same.
func TestTrainPublishesToRegistry(t *testing.T) {
	w := startRegistryWorld(t)
	dir := t.TempDir()
	if _, _, err := dataset.WriteSynth(context.Background(), filepath.Join(dir, "data"), dataset.SynthOptions{N: 4, W: 48, H: 48, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "c.yaml")
	yaml := fmt.Sprintf(`data: {root: %[1]s/data/train, cache_dir: %[1]s/cache, patch_size: 16, tile_size: 48, tile_threshold: 16}
model: {rrdb: {nf: 8, nb: 2, gc: 8}, unet: {dim: 8, dim_mults: [1, 2]}}
masks: {dir: %[1]s/masks}
train: {rrdb_batch_size: 2, rrdb_steps: 4, ckpt_every: 2, val_every: 0, log_every: 2, keep_checkpoints: 0, out: %[1]s/run}
`, dir)
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SAMDIFFSR_CLUSTER_NATS_URL", w.url)
	t.Setenv("SAMDIFFSR_CLUSTER_NATS_JOB", regJob)
	if _, errs, code := runCLI(t, "train", "--config", cfgFile, "--stage", "rrdb"); code != 0 {
		t.Fatalf("train: exit %d: %s", code, errs)
	}
	if got := w.listIDs(); !slices.Equal(got, []string{"rrdb/" + checkpoints.DirName(2), "rrdb/" + checkpoints.DirName(4)}) {
		t.Fatalf("registry after train: %v", got)
	}
	// Unreachable: trains anyway.
	t.Setenv("SAMDIFFSR_CLUSTER_NATS_URL", "nats://127.0.0.1:1")
	if _, errs, code := runCLI(t, "train", "--config", cfgFile, "--stage", "rrdb", "--out", filepath.Join(dir, "run2")); code != 0 {
		t.Fatalf("train with an unreachable registry: exit %d: %s", code, errs)
	}
	if _, err := checkpoints.Latest(filepath.Join(dir, "run2", "rrdb")); err != nil {
		t.Fatalf("no checkpoint written with the registry unreachable: %v", err)
	}
}

func TestStatusShowsRegistry(t *testing.T) {
	best := natsutil.CheckpointInfo{ID: stepID(300), Seq: 3, Metrics: map[string]float64{"val_psnr_y": 26.5}}
	latest := natsutil.CheckpointInfo{ID: stepID(900), Seq: 9}
	var b strings.Builder
	printStatus(&b, natsutil.Status{Job: "j", Registry: &natsutil.RegistryStatus{Count: 5, Latest: &latest, Best: &best}})
	for _, want := range []string{"5 committed", "latest " + stepID(900) + " (seq 9, PSNR-Y -)", "best " + stepID(300) + " (seq 3, PSNR-Y 26.500)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

func TestCheckpointsListWithoutFolderOrNATS(t *testing.T) {
	t.Setenv("SAMDIFFSR_CLUSTER_NATS_URL", "")
	_, errs, code := runCLI(t, "checkpoints", "list")
	if code != 2 || !strings.Contains(errs, "give a run folder") || !strings.Contains(errs, "--nats URL") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// TestWatchPullRetries: watch's pull retries a failure that can pass (an object
// missing for a moment) and gives up at once on a digest mismatch.
func TestWatchPullRetries(t *testing.T) {
	w := startRegistryWorld(t)
	src := w.save("diffusion", 7, 0)
	w.publish(src)
	ctx := context.Background()
	info, err := w.reg.Resolve(ctx, checkpoints.Selector{Alias: "latest"})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(w.nc)
	obs, err := js.ObjectStore(ctx, natsutil.NamesFor(regJob).CheckpointBucket())
	if err != nil {
		t.Fatal(err)
	}
	model := info.Files[slices.IndexFunc(info.Files, func(f natsutil.CheckpointFile) bool { return f.Name == checkpoints.ModelFile })]
	name := natsutil.CheckpointObject(model.SHA256)
	if err := obs.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	data, err := os.ReadFile(filepath.Join(src, checkpoints.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	restored := make(chan error, 1)
	go func() {
		for !strings.Contains(logs.String(), "pull failed; retrying") {
			time.Sleep(5 * time.Millisecond)
		}
		_, err := obs.PutBytes(ctx, name, data)
		restored <- err
	}()
	cache := filepath.Join(w.dir, "cache")
	if _, err := pullRetrying(ctx, w.reg, info, filepath.Join(w.dir, "out1"), cache, 20*time.Millisecond, log); err != nil {
		t.Fatalf("pull after the object came back: %v", err)
	}
	if err := <-restored; err != nil {
		t.Fatal(err)
	}
	// A corrupted object is final: one attempt, no retry.
	os.RemoveAll(cache)
	if err := objstoretest.FlipByte(ctx, js, natsutil.NamesFor(regJob).CheckpointBucket(), name, 10); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	_, err = pullRetrying(ctx, w.reg, info, filepath.Join(w.dir, "out2"), cache, time.Hour, log)
	if err == nil || strings.Contains(logs.String(), "retrying") {
		t.Fatalf("corrupted object: %v (log %q)", err, logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader in two goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}
