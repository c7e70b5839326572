//go:build cgo

package samonnx

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"sort"
	"sync"
	"testing"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/maskgen"
	"github.com/samdiffsr/samdiffsr/maskgen/samonnx/internal/standin"
)

// testImage is a w x h image with a few colour regions (red left third, dark blue
// top right, a gradient below it and a white square), so that the stand-in
// encoder's embedding (and through it the decoder's masks) varies across it.
func testImage(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.NRGBA{A: 255}
			switch {
			case x >= w/2 && x < w/2+w/8 && y >= h/4 && y < h/4+h/6:
				c.R, c.G, c.B = 250, 250, 250
			case x < w/3:
				c.R, c.G, c.B = 230, 40, 40
			case y < h/2:
				c.R, c.G, c.B = 20, 30, 160
			default:
				c.R, c.G, c.B = uint8(255*x/w), 128, uint8(255*y/h)
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

// decodeRecord is what the decoder returned for one prompt.
type decodeRecord struct {
	xy       [2]float32
	iou, low []float32
}

// segmentRecorded runs s on img, recording every prompt's decoder outputs.
func segmentRecorded(t *testing.T, s *Segmenter, img image.Image) (*maskgen.LabelMap, []decodeRecord) {
	t.Helper()
	n := s.cfg.PointsPerSide * s.cfg.PointsPerSide
	recs := make([]decodeRecord, n)
	var mu sync.Mutex
	calls := 0
	s.onDecode = func(p int, xy [2]float32, iou, low []float32) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		recs[p] = decodeRecord{xy: xy, iou: append([]float32(nil), iou...), low: append([]float32(nil), low...)}
	}
	defer func() { s.onDecode = nil }()
	lm, err := s.Segment(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if calls != n {
		t.Fatalf("decoder saw %d prompts, want %d", calls, n)
	}
	return lm, recs
}

// refTally counts what each stage of the reference generator did.
type refTally struct {
	prompts, droppedIoU, droppedStability, droppedNMS, kept, overwritten int
}

// referenceAMG is SamAutomaticMaskGenerator written out plainly over the recorded
// decoder outputs: multimask outputs 1..3, IoU filter, stability score and mask on
// the literal full-resolution logits, greedy NMS over boxes by descending IoU,
// painting in that order.
func referenceAMG(recs []decodeRecord, w, h int, cfg configs.SAM) ([]uint16, int, refTally) {
	type cand struct {
		iou float32
		box [4]int
		low []float32
	}
	var tally refTally
	var cands []cand
	naive := newNaiveUpscaler(w, h)
	plane := 256 * 256
	for _, r := range recs {
		tally.prompts++
		for k := 1; k < 4; k++ {
			if !(r.iou[k] > float32(cfg.PredIoUThresh)) {
				tally.droppedIoU++
				continue
			}
			low := r.low[k*plane : (k+1)*plane]
			full := naive.logits(low)
			var hi, lo int
			x0, y0, x1, y1 := w, h, -1, -1
			for i, v := range full {
				if v > float32(cfg.MaskThreshold+cfg.StabilityScoreOffset) {
					hi++
				}
				if v > float32(cfg.MaskThreshold-cfg.StabilityScoreOffset) {
					lo++
				}
				if v > float32(cfg.MaskThreshold) {
					x, y := i%w, i/w
					x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
				}
			}
			if lo == 0 || !(float32(hi)/float32(lo) >= float32(cfg.StabilityScoreThresh)) {
				tally.droppedStability++
				continue
			}
			box := [4]int{}
			if x1 >= 0 {
				box = [4]int{x0, y0, x1, y1}
			}
			cands = append(cands, cand{iou: r.iou[k], box: box, low: low})
		}
	}
	sort.SliceStable(cands, func(a, b int) bool { return cands[a].iou > cands[b].iou })
	var kept []cand
	for _, c := range cands {
		drop := false
		for _, k := range kept {
			iw := float32(max(0, min(c.box[2], k.box[2])-max(c.box[0], k.box[0])))
			ih := float32(max(0, min(c.box[3], k.box[3])-max(c.box[1], k.box[1])))
			ac := float32(c.box[2]-c.box[0]) * float32(c.box[3]-c.box[1])
			ak := float32(k.box[2]-k.box[0]) * float32(k.box[3]-k.box[1])
			if float64(iw*ih/(ac+ak-iw*ih)) > cfg.BoxNMSThresh {
				drop = true
				break
			}
		}
		if drop {
			tally.droppedNMS++
			continue
		}
		kept = append(kept, c)
	}
	tally.kept = len(kept)
	labels := make([]uint16, w*h)
	for i, c := range kept {
		for p, v := range naive.logits(c.low) {
			if v > float32(cfg.MaskThreshold) {
				if labels[p] != 0 {
					tally.overwritten++
				}
				labels[p] = uint16(i + 1)
			}
		}
	}
	return labels, len(kept), tally
}

// embeddingChannel0 is the stand-in encoder's channel 0 computed here: the 16x16
// mean of the normalised red channel of the resized, padded image (float64).
func embeddingChannel0(img image.Image) func(r, c int) float32 {
	rgb, w, h := rgb8(img)
	nw, nh := resizedSize(w, h)
	resized := resizePIL(rgb, w, h, nw, nh)
	var e [64][64]float64
	for y := 0; y < nh; y++ {
		for x := 0; x < nw; x++ {
			e[y/16][x/16] += (float64(resized[3*(y*nw+x)]) - 123.675) / 58.395
		}
	}
	return func(r, c int) float32 { return float32(e[r][c] / 256) }
}

// checkDecoderInputs verifies that each prompt went to the decoder at its grid
// point in the 1024 frame, and that the decoder's outputs are the stand-in's known
// function of that point and of the image.
func checkDecoderInputs(t *testing.T, recs []decodeRecord, img image.Image, n int) {
	t.Helper()
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	scale := 1024 / float64(max(w, h))
	nw, nh := math.Floor(float64(w)*scale+0.5), math.Floor(float64(h)*scale+0.5)
	e0 := embeddingChannel0(img)
	p := standin.DecoderParams()
	want := make([]float32, 256*256)
	worst := 0.0
	for i, r := range recs {
		px := (float64(i%n) + 0.5) / float64(n) * nw
		py := (float64(i/n) + 0.5) / float64(n) * nh
		if math.Abs(float64(r.xy[0])-px) > 1e-3 || math.Abs(float64(r.xy[1])-py) > 1e-3 {
			t.Fatalf("prompt %d at %v in the 1024 frame, want (%.3f, %.3f)", i, r.xy, px, py)
		}
		for k := 0; k < 4; k++ {
			if d := math.Abs(float64(r.iou[k] - p.IoU(k, r.xy[0], r.xy[1], 1))); d > 1e-6 {
				t.Fatalf("prompt %d mask %d: predicted IoU %v, stand-in function gives %v (label not 1?)", i, k, r.iou[k], p.IoU(k, r.xy[0], r.xy[1], 1))
			}
			if i%5 != 0 && i != len(recs)-1 {
				continue // the logits of every fifth prompt suffice to check the wiring
			}
			p.LowRes(k, r.xy[0], r.xy[1], e0, want)
			for j, v := range r.low[k*256*256 : (k+1)*256*256] {
				worst = max(worst, math.Abs(float64(v-want[j])))
			}
		}
	}
	if worst > 1e-3 {
		t.Fatalf("decoder low-res logits differ from the stand-in function by up to %g", worst)
	}
}

// TestEndToEndStandin runs the whole generator on the stand-in models and checks the
// label map against the reference generator computed from the decoder's outputs,
// after checking those outputs against the stand-in's known function.
func TestEndToEndStandin(t *testing.T) {
	var total refTally
	for _, c := range []struct {
		name        string
		w, h        int
		batched     bool
		side, batch int
	}{
		{"default grid, upscaled 160x120, batches of 64", 160, 120, true, 32, 64},
		{"no resize 1024x768, batches of 5", 1024, 768, true, 8, 5},
		{"batch-1 decoder like SAM's export, 517x389", 517, 389, false, 7, 64},
		{"portrait 90x200", 90, 200, true, 12, 64},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := standinConfig(t, c.batched)
			cfg.PointsPerSide, cfg.PointsPerBatch = c.side, c.batch
			s, err := New(cfg, WithThreads(2))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			wantBatch := 1
			if c.batched {
				wantBatch = c.batch
			}
			if s.decBatch != wantBatch || s.nm != 4 {
				t.Fatalf("decoder batch %d, masks %d; want %d, 4", s.decBatch, s.nm, wantBatch)
			}
			img := testImage(c.w, c.h)
			lm, recs := segmentRecorded(t, s, img)
			if err := lm.Validate(); err != nil {
				t.Fatal(err)
			}
			if lm.Width != c.w || lm.Height != c.h {
				t.Fatalf("label map %dx%d", lm.Width, lm.Height)
			}
			checkDecoderInputs(t, recs, img, c.side)
			want, regions, tally := referenceAMG(recs, c.w, c.h, cfg)
			t.Logf("%+v", tally)
			if lm.Regions != regions {
				t.Errorf("regions %d, want %d", lm.Regions, regions)
			}
			bad := 0
			for i := range want {
				if lm.Labels[i] != want[i] {
					if bad < 5 {
						t.Errorf("pixel (%d,%d): label %d, want %d", i%c.w, i/c.w, lm.Labels[i], want[i])
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d pixels differ from the reference generator", bad, len(want))
			}
			total.droppedIoU += tally.droppedIoU
			total.droppedStability += tally.droppedStability
			total.droppedNMS += tally.droppedNMS
			total.kept += tally.kept
			total.overwritten += tally.overwritten
		})
	}
	// The fixtures must exercise every stage, or the comparison proves little.
	if total.droppedIoU == 0 || total.droppedStability == 0 || total.droppedNMS == 0 || total.kept == 0 || total.overwritten == 0 {
		t.Errorf("stand-in fixtures do not exercise every stage: %+v", total)
	}
}

// TestSegmentDeterministic segments an image, another of a different size, then
// the first again with the same sessions: the results must be identical.
func TestSegmentDeterministic(t *testing.T) {
	cfg := standinConfig(t, true)
	cfg.PointsPerSide = 16
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := testImage(200, 150), testImage(150, 200)
	first, err := s.Segment(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Segment(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	again, err := s.Segment(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	if first.Regions == 0 || first.Regions != again.Regions || fmt.Sprint(first.Labels) != fmt.Sprint(again.Labels) {
		t.Errorf("second run differs: regions %d then %d", first.Regions, again.Regions)
	}
}

// TestStandinMasksMatchUpscaling checks this package's PyTorch-style upscaling of
// low_res_masks against ONNX Runtime's Resize in the stand-in decoder's masks output
// (SAM's mask_postprocessing, built from ONNX ops).
func TestStandinMasksMatchUpscaling(t *testing.T) {
	cfg := standinConfig(t, false)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, sz := range [][2]int{{123, 77}, {61, 90}} {
		w, h := sz[0], sz[1]
		low, masks := runFullDecoder(t, cfg.Decoder, w, h, [2]float32{300, 200})
		worst, flips := 0.0, 0
		for k := 0; k < 4; k++ {
			want := naiveLogits(low[k*256*256:(k+1)*256*256], w, h)
			f := newFrame(w, h)
			l := fullGrid(low[k*256*256 : (k+1)*256*256])
			for i, v := range masks[k*w*h : (k+1)*w*h] {
				worst = max(worst, math.Abs(float64(v-want[i])))
				if got := f.value(&l, i%w, i/w); got != want[i] {
					t.Fatalf("frame.value differs from the literal upscaling at %d: %v vs %v", i, got, want[i])
				}
				if (v > 0) != (want[i] > 0) && math.Abs(float64(v)) > 1e-3 {
					flips++
				}
			}
		}
		if worst > 1e-5*300 || flips > 0 { // logits reach ±300: float32 rounding of ~1e-5 relative
			t.Errorf("%dx%d: ONNX Runtime's masks differ from the upscaling by up to %g (%d mask pixels flip)", w, h, worst, flips)
		}
	}
}

func TestSegmentCancelled(t *testing.T) {
	cfg := standinConfig(t, true)
	cfg.PointsPerSide = 4
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Segment(ctx, testImage(40, 30)); !errors.Is(err, context.Canceled) {
		t.Errorf("Segment with a cancelled context: %v", err)
	}
}

// TestSegmentConcurrent segments two images at once with one Segmenter: each result
// must equal the one segmented alone.
func TestSegmentConcurrent(t *testing.T) {
	cfg := standinConfig(t, true)
	cfg.PointsPerSide = 8
	s, err := New(cfg, WithThreads(1))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	imgs := []image.Image{testImage(120, 90), testImage(90, 120)}
	alone := make([]*maskgen.LabelMap, len(imgs))
	for i, img := range imgs {
		if alone[i], err = s.Segment(context.Background(), img); err != nil {
			t.Fatal(err)
		}
	}
	together := make([]*maskgen.LabelMap, len(imgs))
	errs := make([]error, len(imgs))
	var wg sync.WaitGroup
	for i, img := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			together[i], errs[i] = s.Segment(context.Background(), img)
		}()
	}
	wg.Wait()
	for i := range imgs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if alone[i].Regions == 0 || together[i].Regions != alone[i].Regions || fmt.Sprint(together[i].Labels) != fmt.Sprint(alone[i].Labels) {
			t.Errorf("image %d: concurrent result differs (regions %d vs %d)", i, together[i].Regions, alone[i].Regions)
		}
	}
}
