package maskgen

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// rows turns "01.."-strings (one per row) into a row-major mask.
func rows(rs ...string) []bool {
	var m []bool
	for _, r := range rs {
		for _, c := range r {
			m = append(m, c == '1')
		}
	}
	return m
}

// TestRLEHandComputed decodes masks whose runs and compressed strings were worked out
// by hand from pycocotools' rleToString/rleFrString (column-major runs, deltas to the
// count two before from the fourth count on), in both JSON forms.
func TestRLEHandComputed(t *testing.T) {
	for _, c := range []struct {
		name       string
		h, w       int
		counts     []int
		compressed string
		mask       []bool
	}{
		{"3x2", 3, 2, []int{0, 2, 2, 2}, "0220", rows("10", "11", "01")},
		// 20 needs two characters ('d' carries the continuation bit); 5-20 = -15
		// is a negative delta ('A' has the sign bit).
		{"odd 5x7", 5, 7, []int{3, 20, 1, 5, 6}, "3d01A5",
			rows("0111110", "0111110", "0111110", "1111010", "1111100")},
		{"empty 3x4", 3, 4, []int{12}, "<", rows("0000", "0000", "0000")},
		{"full 3x4", 3, 4, []int{0, 12}, "0<", rows("1111", "1111", "1111")},
		{"single pixel 1x1", 1, 1, []int{0, 1}, "01", rows("1")},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := EncodeRLEString(c.counts); got != c.compressed {
				t.Errorf("EncodeRLEString(%v) = %q, want %q", c.counts, got, c.compressed)
			}
			enc, err := EncodeRLE(c.mask, c.w, c.h)
			if err != nil || !reflect.DeepEqual(enc.Counts, c.counts) {
				t.Errorf("EncodeRLE = %v, %v; want counts %v", enc.Counts, err, c.counts)
			}
			cs, _ := json.Marshal(c.compressed)
			us, _ := json.Marshal(c.counts)
			for form, counts := range map[string]string{"compressed": string(cs), "uncompressed": string(us)} {
				js := `{"size": [` + itoa(c.h) + `, ` + itoa(c.w) + `], "counts": ` + counts + `}`
				var r RLE
				if err := json.Unmarshal([]byte(js), &r); err != nil {
					t.Fatalf("%s: %v", form, err)
				}
				if r.Height != c.h || r.Width != c.w || !reflect.DeepEqual(r.Counts, c.counts) {
					t.Errorf("%s: parsed %dx%d %v", form, r.Height, r.Width, r.Counts)
				}
				m, err := r.Decode()
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(m, c.mask) {
					t.Errorf("%s: decoded %v, want %v", form, m, c.mask)
				}
			}
		})
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestRLERoundTrip: random masks of odd sizes survive encode → string → decode.
func TestRLERoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for k := 0; k < 50; k++ {
		h, w := 1+rng.IntN(40), 1+rng.IntN(40)
		p := rng.Float64()
		mask := make([]bool, h*w)
		for i := range mask {
			mask[i] = rng.Float64() < p
		}
		r, err := EncodeRLE(mask, w, h)
		if err != nil {
			t.Fatal(err)
		}
		js, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back RLE
		if err := json.Unmarshal(js, &back); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		got, err := back.Decode()
		if err != nil || !reflect.DeepEqual(got, mask) {
			t.Fatalf("%dx%d mask did not survive (%v): %s", w, h, err, js)
		}
		area := 0
		for _, b := range mask {
			if b {
				area++
			}
		}
		if back.Area() != area {
			t.Errorf("Area %d, want %d", back.Area(), area)
		}
	}
}

func TestRLEErrors(t *testing.T) {
	for _, c := range []struct{ js, want string }{
		{`{"size": [3, 4], "counts": [5, 5]}`, "cover 10 pixels"},
		{`{"size": [3, 4], "counts": [5, 10]}`, "more than"},
		{`{"size": [3, 4], "counts": [-1, 13]}`, "negative"},
		{`{"size": [3, 4], "counts": "0~"}`, "outside"},
		{`{"size": [3, 4], "counts": "d"}`, "ends inside"},
		{`{"size": [3], "counts": "<"}`, "size"},
		{`{"size": [3, 4]}`, "no counts"},
		{`{"size": [3, 4], "counts": {"a": 1}}`, "string or a list"},
		{`{"size": [3, 4], "counts": "00A"}`, "decodes to"},
	} {
		var r RLE
		err := json.Unmarshal([]byte(c.js), &r)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one containing %q", c.js, err, c.want)
		}
	}
}

// TestPaintSAMAnnotations: descending predicted IoU, later overwrites, 0 = no mask.
func TestPaintSAMAnnotations(t *testing.T) {
	const w, h = 4, 3
	ann := func(iou float64, rs ...string) SAMAnnotation {
		r, err := EncodeRLE(rows(rs...), w, h)
		if err != nil {
			t.Fatal(err)
		}
		return SAMAnnotation{Segmentation: r, PredictedIoU: iou}
	}
	anns := []SAMAnnotation{
		ann(0.5, "1100", "1100", "0000"), // painted last: label 3
		ann(0.9, "1111", "0000", "0000"), // first: label 1
		ann(0.7, "0110", "0110", "0110"), // second: label 2
	}
	lm, err := PaintSAMAnnotations(anns, w, h)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint16{
		3, 3, 2, 1,
		3, 3, 2, 0,
		0, 2, 2, 0,
	}
	if !reflect.DeepEqual(lm.Labels, want) || lm.Regions != 3 {
		t.Errorf("labels %v (regions %d), want %v (3)", lm.Labels, lm.Regions, want)
	}
	if _, err := PaintSAMAnnotations(anns, 3, 4); err == nil || !strings.Contains(err.Error(), "another") {
		t.Errorf("size mismatch: err %v", err)
	}
	none, err := PaintSAMAnnotations(nil, w, h)
	if err != nil || none.Regions != 0 || none.Validate() != nil {
		t.Errorf("no masks: %v %v", none, err)
	}
}

func TestParseSAMJSON(t *testing.T) {
	good := `[{"segmentation": {"size": [3, 2], "counts": "0220"}, "area": 4, "bbox": [0, 0, 2, 3],
		"predicted_iou": 0.95, "point_coords": [[1, 1]], "stability_score": 0.97, "crop_box": [0, 0, 2, 3]},
		{"segmentation": {"size": [3, 2], "counts": [0, 6]}, "predicted_iou": 0.9, "stability_score": 0.96}]`
	anns, err := ParseSAMJSON([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(anns) != 2 || anns[0].PredictedIoU != 0.95 || anns[1].Segmentation.Area() != 6 || anns[0].StabilityScore != 0.97 {
		t.Errorf("parsed %+v", anns)
	}
	for _, c := range []struct{ js, want string }{
		{`{"a": 1}`, "list of annotations"},
		{`[{"predicted_iou": 0.9}]`, "annotation 0 has no segmentation"},
		{`[{"segmentation": {"size": [3, 2], "counts": "0220"}}]`, "no predicted_iou"},
		{`[{"segmentation": {"size": [3, 2], "counts": "0220"}, "predicted_iou": 1},
		   {"segmentation": {"size": [2, 3], "counts": "0220"}, "predicted_iou": 1}]`, "annotation 1 is 3x2"},
		{`[{"segmentation": {"size": [3, 2], "counts": "02"}, "predicted_iou": 1}]`, "annotation 0"},
	} {
		if _, err := ParseSAMJSON([]byte(c.js)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one containing %q", c.js, err, c.want)
		}
	}
}
