package main

import (
	"encoding/json"
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

func writeSizedPNG(t *testing.T, path string, w, h int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
}

// samMask is one SAM annotation of a test: a random blob and its predicted IoU.
type samMask struct {
	mask []bool
	iou  float64
}

func randomSAMMasks(rng *rand.Rand, n, w, h int) []samMask {
	out := make([]samMask, n)
	for k := range out {
		m := make([]bool, w*h)
		cx, cy, r := rng.IntN(w), rng.IntN(h), 2+rng.IntN(w/2)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				dx, dy := x-cx, y-cy
				m[y*w+x] = dx*dx+dy*dy < r*r && rng.IntN(10) > 0
			}
		}
		out[k] = samMask{mask: m, iou: 0.88 + 0.1*rng.Float64()}
	}
	out[n-1].iou = out[0].iou // a tie: file order decides
	return out
}

// writeSAMJSON writes masks as amg.py does (alternating the compressed and the
// uncompressed counts forms, to read both).
func writeSAMJSON(t *testing.T, path string, ms []samMask, w, h int) {
	t.Helper()
	var anns []map[string]any
	for k, m := range ms {
		r, err := maskgen.EncodeRLE(m.mask, w, h)
		if err != nil {
			t.Fatal(err)
		}
		var seg any = r
		if k%2 == 1 {
			seg = map[string]any{"size": []int{h, w}, "counts": r.Counts}
		}
		anns = append(anns, map[string]any{"segmentation": seg, "area": r.Area(), "bbox": []int{0, 0, w, h},
			"predicted_iou": m.iou, "point_coords": [][]float64{{1, 1}}, "stability_score": 0.96, "crop_box": []int{0, 0, w, h}})
	}
	if anns == nil {
		anns = []map[string]any{}
	}
	js, err := json.Marshal(anns)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, js, 0o644); err != nil {
		t.Fatal(err)
	}
}

// paintInGo is the expected label map, painted here independently of maskgen:
// descending IoU (stable), label = rank+1, later overwrites.
func paintInGo(ms []samMask, w, h int) []uint16 {
	order := make([]int, len(ms))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return ms[order[a]].iou > ms[order[b]].iou })
	labels := make([]uint16, w*h)
	for rank, i := range order {
		for p, on := range ms[i].mask {
			if on {
				labels[p] = uint16(rank + 1)
			}
		}
	}
	return labels
}

func TestMasksImportSAMJSON(t *testing.T) {
	dir := t.TempDir()
	data, sam, out := filepath.Join(dir, "data"), filepath.Join(dir, "sam_out"), filepath.Join(dir, "masks")
	os.MkdirAll(data, 0o755)
	os.MkdirAll(sam, 0o755)
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := map[string][2]int{"a": {40, 30}, "b": {37, 23}, "c": {40, 30}, "d": {16, 16}, "e": {16, 16}, "f": {9, 7}}
	want := map[string][]uint16{}
	for id, s := range sizes {
		writeSizedPNG(t, filepath.Join(data, id+".png"), s[0], s[1])
	}
	for _, id := range []string{"a", "b"} {
		w, h := sizes[id][0], sizes[id][1]
		ms := randomSAMMasks(rng, 12, w, h)
		writeSAMJSON(t, filepath.Join(sam, id+".json"), ms, w, h)
		want[id] = paintInGo(ms, w, h)
	}
	writeSAMJSON(t, filepath.Join(sam, "c.json"), randomSAMMasks(rng, 3, 30, 40), 30, 40) // transposed size
	os.WriteFile(filepath.Join(sam, "e.json"), []byte(`[{"segmentation": {"size": [16, 16], "counts": "0"}`), 0o644)
	writeSAMJSON(t, filepath.Join(sam, "f.json"), nil, 9, 7) // no masks: all 0
	want["f"] = make([]uint16, 9*7)

	stdout, stderr, code := runCLI(t, "--log-level", "error", "masks", "import", "--from", "sam-json", sam, "--data", data, "--out", out, "--workers", "2")
	if code != 1 {
		t.Fatalf("exit %d, want 1 (three bad images); stdout %q stderr %q", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "3 done, 0 skipped (up to date), 3 failed of 6") {
		t.Errorf("stdout %q", stdout)
	}
	for _, s := range []string{"c.json", "another", "no SAM JSON file for image " + filepath.Join(data, "d.png"), "e.json"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr does not name %q:\n%s", s, stderr)
		}
	}
	var failures []map[string]string
	js, _ := os.ReadFile(filepath.Join(out, "failures.json"))
	if json.Unmarshal(js, &failures) != nil || len(failures) != 3 || failures[0]["id"] != "c" || failures[2]["id"] != "e" {
		t.Errorf("failures.json: %s", js)
	}
	check := func(id string) {
		t.Helper()
		m, sc, err := maskgen.ReadLabelMap(filepath.Join(out, id+".png"))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(m.Labels, want[id]) {
			t.Errorf("label map of %s differs from painting the same masks in Go", id)
		}
		if sc.Segmenter != "sam-json" || sc.Width != sizes[id][0] || sc.Height != sizes[id][1] || sc.Source != id {
			t.Errorf("sidecar of %s: %+v", id, sc)
		}
	}
	for _, id := range []string{"a", "b", "f"} {
		check(id)
	}

	// Resumable: a re-run skips what is done; a changed JSON is imported again.
	ms := randomSAMMasks(rng, 5, 40, 30)
	writeSAMJSON(t, filepath.Join(sam, "a.json"), ms, 40, 30)
	want["a"] = paintInGo(ms, 40, 30)
	for _, id := range []string{"c", "d", "e"} {
		os.Remove(filepath.Join(data, id+".png"))
	}
	stdout, stderr, code = runCLI(t, "--log-level", "error", "masks", "import", "--from", "sam-json", sam, "--data", data, "--out", out)
	if code != 0 || !strings.Contains(stdout, "1 done, 2 skipped (up to date), 0 failed of 3") {
		t.Fatalf("re-run: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	check("a")
	if _, err := os.Stat(filepath.Join(out, "failures.json")); !os.IsNotExist(err) {
		t.Errorf("failures.json left after a clean run: %v", err)
	}

	// Usage errors.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"masks", "import", "--from", "coco", sam, "--data", data, "--out", out}, `--from "coco"`},
		{[]string{"masks", "import", "--from", "sam-json", filepath.Join(dir, "nope"), "--data", data, "--out", out}, "not a folder"},
		{[]string{"masks", "import", "--from", "sam-json", sam, "--data", data, "--out", filepath.Join(sam, "m")}, "inside the SAM JSON folder"},
	} {
		_, stderr, code := runCLI(t, append([]string{"--log-level", "error"}, c.args...)...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, stderr, c.want)
		}
	}
}
