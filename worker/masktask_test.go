package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// writeScenes writes n small PNG images (coloured rectangles plus noise) under
// dir/<set>/ and one corrupt file, and returns them as mask images.
func writeScenes(t testing.TB, dir string, n int) (good []MaskImage, bad MaskImage) {
	t.Helper()
	for i := 0; i < n; i++ {
		rng := rand.New(rand.NewPCG(uint64(i), 3))
		img := image.NewRGBA(image.Rect(0, 0, 48, 40))
		for y := 0; y < 40; y++ {
			for x := 0; x < 48; x++ {
				c := color.RGBA{30, 30, 30, 255}
				if x > 8+i && y > 10 {
					c = color.RGBA{200, 40, 40, 255}
				}
				if x > 30 && y < 25 {
					c = color.RGBA{40, 40, uint8(150 + 5*i), 255}
				}
				c.R += uint8(rng.IntN(4))
				img.SetRGBA(x, y, c)
			}
		}
		set := "setA"
		if i%2 == 1 {
			set = "setB"
		}
		id := fmt.Sprintf("%s/%03d", set, i)
		p := filepath.Join(dir, filepath.FromSlash(id)+".png")
		os.MkdirAll(filepath.Dir(p), 0o755)
		var buf bytes.Buffer
		png.Encode(&buf, img)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		good = append(good, MaskImage{ID: id, Path: p})
	}
	bp := filepath.Join(dir, "broken.png")
	os.WriteFile(bp, []byte("\x89PNG\r\n\x1a\nnot really a png"), 0o644)
	return good, MaskImage{ID: "broken", Path: bp}
}

func testSegmenter() (maskgen.Segmenter, error) {
	return maskgen.NewBuiltin(maskgen.BuiltinOptions{Sigma: 0.5, K: 200, MinSize: 20, Threads: 1})
}

// slowSegmenter delays each segmentation, so that runs can be stopped midway.
type slowSegmenter struct {
	maskgen.Segmenter
	delay time.Duration
}

func (s slowSegmenter) Segment(ctx context.Context, img image.Image) (*maskgen.LabelMap, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Segmenter.Segment(ctx, img)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestProcessMaskImage(t *testing.T) {
	good, bad := writeScenes(t, t.TempDir(), 2)
	seg, _ := testSegmenter()
	r1, err := ProcessMaskImage(context.Background(), seg, good[0].ID, good[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := ProcessMaskImage(context.Background(), seg, good[0].ID, good[0].Path)
	if !bytes.Equal(r1.PNG, r2.PNG) || !bytes.Equal(r1.Sidecar, r2.Sidecar) {
		t.Error("the same image gave different bytes")
	}
	src, _ := os.ReadFile(good[0].Path)
	if r1.SHA256 != maskgen.SHA256Hex(src) || r1.ImageID != good[0].ID {
		t.Errorf("result names %s / %s", r1.ImageID, r1.SHA256)
	}
	lm, err := maskgen.DecodeLabelMapPNG(r1.PNG)
	if err != nil || lm.Width != 48 || lm.Height != 40 || lm.Regions != r1.Regions || r1.Regions < 2 {
		t.Fatalf("label map %v, %+v (regions %d)", err, lm, r1.Regions)
	}
	sc, err := maskgen.UnmarshalSidecar(r1.Sidecar)
	if err != nil || sc.SourceSHA256 != r1.SHA256 || sc.Segmenter != "builtin" || sc.Source != good[0].ID ||
		sc.LabelsSHA256 != maskgen.SHA256Hex(r1.PNG) || sc.Params["k"] != 200.0 {
		t.Errorf("sidecar %v %+v", err, sc)
	}
	if _, err := ProcessMaskImage(context.Background(), seg, bad.ID, bad.Path); err == nil || !strings.Contains(err.Error(), bad.Path) {
		t.Errorf("corrupt image: err = %v, want an error naming %s", err, bad.Path)
	}
	missing := filepath.Join(t.TempDir(), "nope.png")
	if _, err := ProcessMaskImage(context.Background(), seg, "nope", missing); err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing image: err = %v", err)
	}
}

// tally counts outcomes per image across runs.
type tally struct {
	mu sync.Mutex
	m  map[string]map[string]int
}

func (t *tally) add(id, what string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]map[string]int{}
	}
	if t.m[id] == nil {
		t.m[id] = map[string]int{}
	}
	t.m[id][what]++
}

// checkOutputs verifies that every good image has a complete, valid label map and that
// no temporary file is left in out.
func checkOutputs(t *testing.T, out string, good []MaskImage) {
	t.Helper()
	for _, im := range good {
		p := dataset.MaskPath(out, im.ID)
		lm, sc, err := maskgen.ReadLabelMap(p)
		if err != nil {
			t.Errorf("image %s: %v", im.ID, err)
			continue
		}
		src, _ := os.ReadFile(im.Path)
		if sc.SourceSHA256 != maskgen.SHA256Hex(src) || lm.Width != 48 {
			t.Errorf("image %s: sidecar %+v", im.ID, sc)
		}
	}
	filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

func TestLocalMaskFarm(t *testing.T) {
	dir := t.TempDir()
	good, bad := writeScenes(t, filepath.Join(dir, "data"), 7)
	out := filepath.Join(dir, "masks")
	images := append([]MaskImage{bad}, good...)
	run := func(newSeg func() (maskgen.Segmenter, error)) (*FarmReport, *tally) {
		t.Helper()
		var tl tally
		rep, err := RunLocalMaskFarm(context.Background(), LocalFarmOptions{Images: images, Out: out, Workers: 3,
			NewSegmenter: newSeg, Log: quietLog(), ProgressOut: io.Discard, OnImage: tl.add})
		if err != nil {
			t.Fatal(err)
		}
		return rep, &tl
	}
	rep, _ := run(testSegmenter)
	if rep.Total != 8 || rep.Done != 7 || rep.Failed != 1 || rep.Skipped != 0 {
		t.Fatalf("first run: %+v", rep)
	}
	if len(rep.Failures) != 1 || rep.Failures[0].ID != "broken" || !strings.Contains(rep.Failures[0].Error, bad.Path) {
		t.Errorf("failures %+v", rep.Failures)
	}
	var listed []MaskFailure
	js, err := os.ReadFile(filepath.Join(out, FailuresFile))
	if err != nil || json.Unmarshal(js, &listed) != nil || len(listed) != 1 || listed[0].Path != bad.Path {
		t.Errorf("failures.json: %v %s", err, js)
	}
	checkOutputs(t, out, good)
	first, _ := os.ReadFile(dataset.MaskPath(out, good[3].ID))

	// Re-run: everything up to date is skipped, the bad image fails again.
	rep, _ = run(testSegmenter)
	if rep.Done != 0 || rep.Skipped != 7 || rep.Failed != 1 {
		t.Fatalf("second run: %+v", rep)
	}
	// A changed image is redone; so is a label map whose PNG no longer matches its sidecar.
	src, _ := os.ReadFile(good[2].Path)
	img, _ := png.Decode(bytes.NewReader(src))
	img.(*image.RGBA).Pix[0] ^= 0xff
	var buf bytes.Buffer
	png.Encode(&buf, img)
	os.WriteFile(good[2].Path, buf.Bytes(), 0o644)
	os.WriteFile(dataset.MaskPath(out, good[4].ID), first, 0o644)
	rep, tl := run(testSegmenter)
	if rep.Done != 2 || rep.Skipped != 5 || tl.m[good[2].ID][MaskDone] != 1 || tl.m[good[4].ID][MaskDone] != 1 {
		t.Fatalf("after changing two: %+v", rep)
	}
	checkOutputs(t, out, good)
	// Other segmenter parameters: everything is redone.
	rep, _ = run(func() (maskgen.Segmenter, error) {
		return maskgen.NewBuiltin(maskgen.BuiltinOptions{Sigma: 0.5, K: 300, MinSize: 20, Threads: 1})
	})
	if rep.Done != 7 {
		t.Fatalf("after a parameter change: %+v", rep)
	}
	// Without the bad image, failures.json goes away.
	var tl2 tally
	rep, err = RunLocalMaskFarm(context.Background(), LocalFarmOptions{Images: good, Out: out, Workers: 2,
		NewSegmenter: testSegmenter, Log: quietLog(), ProgressOut: io.Discard, OnImage: tl2.add})
	if err != nil || rep.Failed != 0 || rep.Done != 7 {
		t.Fatalf("clean run: %v %+v", err, rep)
	}
	if _, err := os.Stat(filepath.Join(out, FailuresFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failures.json still there after a run without failures: %v", err)
	}

	// Bad options.
	if _, err := RunLocalMaskFarm(context.Background(), LocalFarmOptions{Images: good, Out: out}); err == nil {
		t.Error("no segmenter factory accepted")
	}
	dup := []MaskImage{good[0], {ID: good[0].ID, Path: good[1].Path}}
	if _, err := RunLocalMaskFarm(context.Background(), LocalFarmOptions{Images: dup, Out: out, NewSegmenter: testSegmenter}); err == nil {
		t.Error("duplicate IDs accepted")
	}
}

func TestLocalMaskFarmCancelResume(t *testing.T) {
	dir := t.TempDir()
	good, _ := writeScenes(t, filepath.Join(dir, "data"), 12)
	out := filepath.Join(dir, "masks")
	var tl tally
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	done := 0
	onImage := func(id, what string) {
		tl.add(id, what)
		mu.Lock()
		defer mu.Unlock()
		if done++; done == 4 {
			cancel()
		}
	}
	slow := func() (maskgen.Segmenter, error) {
		s, err := testSegmenter()
		return slowSegmenter{s, 30 * time.Millisecond}, err
	}
	rep, err := RunLocalMaskFarm(ctx, LocalFarmOptions{Images: good, Out: out, Workers: 2, NewSegmenter: slow,
		Log: quietLog(), ProgressOut: io.Discard, OnImage: onImage})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: err = %v", err)
	}
	if rep.Done < 4 || rep.Done >= 12 || rep.Failed != 0 {
		t.Fatalf("cancelled run report %+v: want 4..11 done, none failed", rep)
	}
	firstDone := rep.Done
	rep, err = RunLocalMaskFarm(context.Background(), LocalFarmOptions{Images: good, Out: out, Workers: 2, NewSegmenter: testSegmenter,
		Log: quietLog(), ProgressOut: io.Discard, OnImage: tl.add})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped != firstDone || rep.Done != 12-firstDone {
		t.Fatalf("resumed run %+v after %d done", rep, firstDone)
	}
	for _, im := range good {
		if n := tl.m[im.ID][MaskDone]; n != 1 {
			t.Errorf("image %s done %d times over both runs, want exactly 1", im.ID, n)
		}
	}
	checkOutputs(t, out, good)
}

// TestMaskFarmHelperProcess is not a test: TestLocalMaskFarmKilled runs the test binary
// again with SAMDIFFSR_MASKFARM_HELPER set, and this function is then the farm process
// that gets killed.
func TestMaskFarmHelperProcess(t *testing.T) {
	spec := os.Getenv("SAMDIFFSR_MASKFARM_HELPER")
	if spec == "" {
		t.Skip("helper process for TestLocalMaskFarmKilled")
	}
	var images []MaskImage
	var out string
	if err := json.Unmarshal([]byte(spec), &struct {
		Images *[]MaskImage
		Out    *string
	}{&images, &out}); err != nil {
		t.Fatal(err)
	}
	slow := func() (maskgen.Segmenter, error) {
		s, err := testSegmenter()
		return slowSegmenter{s, 40 * time.Millisecond}, err
	}
	RunLocalMaskFarm(context.Background(), LocalFarmOptions{Images: images, Out: out, Workers: 2, NewSegmenter: slow,
		Log: quietLog(), ProgressOut: io.Discard})
}

func TestLocalMaskFarmKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a subprocess")
	}
	dir := t.TempDir()
	good, _ := writeScenes(t, filepath.Join(dir, "data"), 30)
	out := filepath.Join(dir, "masks")
	spec, _ := json.Marshal(map[string]any{"Images": good, "Out": out})
	cmd := exec.Command(os.Args[0], "-test.run=^TestMaskFarmHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SAMDIFFSR_MASKFARM_HELPER="+string(spec))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it (SIGKILL: no cleanup) once some label maps are complete.
	completed := func() int {
		n := 0
		for _, im := range good {
			if _, err := os.Stat(maskgen.SidecarPath(dataset.MaskPath(out, im.ID))); err == nil {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for completed() < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	before := completed()
	if before < 5 || before == len(good) {
		t.Fatalf("the helper completed %d of %d images before it was killed; want a run stopped midway", before, len(good))
	}
	// Everything completed before the kill is valid; record its modification times.
	mtimes := map[string]time.Time{}
	for _, im := range good {
		p := dataset.MaskPath(out, im.ID)
		if st, err := os.Stat(maskgen.SidecarPath(p)); err == nil {
			if _, _, err := maskgen.ReadLabelMap(p); err != nil {
				t.Errorf("label map of %s written before the kill is invalid: %v", im.ID, err)
			}
			mtimes[im.ID] = st.ModTime()
		}
	}
	var tl tally
	rep, err := RunLocalMaskFarm(context.Background(), LocalFarmOptions{Images: good, Out: out, Workers: 2, NewSegmenter: testSegmenter,
		Log: quietLog(), ProgressOut: io.Discard, OnImage: tl.add})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped != len(mtimes) || rep.Done != len(good)-len(mtimes) || rep.Failed != 0 {
		t.Fatalf("resumed run %+v, %d complete before", rep, len(mtimes))
	}
	for _, im := range good {
		_, wasDone := mtimes[im.ID]
		want := MaskDone
		if wasDone {
			want = MaskSkipped
		}
		if tl.m[im.ID][want] != 1 || len(tl.m[im.ID]) != 1 {
			t.Errorf("image %s: outcomes %v, want one %s", im.ID, tl.m[im.ID], want)
		}
		if wasDone {
			st, _ := os.Stat(maskgen.SidecarPath(dataset.MaskPath(out, im.ID)))
			if !st.ModTime().Equal(mtimes[im.ID]) {
				t.Errorf("image %s was rewritten by the resumed run", im.ID)
			}
		}
	}
	checkOutputs(t, out, good)
}

// TestFarmProcessHonoursMaxPixels: the farm's per-image task refuses, from the
// header, an image over data.max_pixels, naming the file.
func TestFarmProcessHonoursMaxPixels(t *testing.T) {
	good, _ := writeScenes(t, t.TempDir(), 1)
	seg, _ := testSegmenter()
	proc := NewFarmProcess(seg, 100)
	_, err := proc(context.Background(), good[0].ID, good[0].Path)
	if err == nil || !strings.Contains(err.Error(), good[0].Path) {
		t.Fatalf("image over the pixel limit: %v", err)
	}
	if _, err := NewFarmProcess(seg, 0)(context.Background(), good[0].ID, good[0].Path); err != nil {
		t.Fatalf("default limit: %v", err)
	}
}
