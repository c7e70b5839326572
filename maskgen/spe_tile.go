package maskgen

import "fmt"

// TileLabels is what E of the patches cut from one tile needs, for either crop mode,
// without the rest of the label map: a data shard stores these (uint16 labels) and the
// image's region values instead of float32 E.
type TileLabels struct {
	// W, H is the tile size (HR pixels; multiples of the scale).
	W, H int
	// Aligned holds the W*H labels under the tile's own pixels (CropAligned).
	Aligned []uint16
	// Window holds the (W/s)*(H/s) labels of the reference crop's LR window: rows
	// y/s.., columns x/s.. of the full-resolution map for a tile at (x, y)
	// (CropReference; s = the scale).
	Window []uint16
}

// TileLabels copies the labels patches of the tile (wx, wy, ww, wh) need under
// either crop mode (see TileLabels); ww and wh must be multiples of the scale.
func (e *Encoder) TileLabels(wx, wy, ww, wh int) (TileLabels, error) {
	W, H, s := e.m.Width, e.m.Height, e.opt.Scale
	if ww <= 0 || wh <= 0 || wx < 0 || wy < 0 || wx+ww > W || wy+wh > H || ww%s != 0 || wh%s != 0 {
		return TileLabels{}, fmt.Errorf("maskgen: tile %dx%d at (%d,%d) outside the %dx%d label map or not a multiple of %d", ww, wh, wx, wy, W, H, s)
	}
	t := TileLabels{W: ww, H: wh, Aligned: make([]uint16, 0, ww*wh), Window: make([]uint16, 0, (ww/s)*(wh/s))}
	for r := wy; r < wy+wh; r++ {
		t.Aligned = append(t.Aligned, e.m.Labels[r*W+wx:r*W+wx+ww]...)
	}
	lx, ly := wx/s, wy/s
	for r := ly; r < ly+wh/s; r++ {
		t.Window = append(t.Window, e.m.Labels[r*W+lx:r*W+lx+ww/s]...)
	}
	return t, nil
}

// TilePatch writes E of the w x h patch at (x, y) in tile coordinates into dst, from
// the tile's labels and the image's region values (Encoder.Values for opt.Mean). It
// equals Encoder.PatchInWindow with the tile as the window, reduce rule included.
func TilePatch(values []float32, opt SPEOptions, t TileLabels, x, y, w, h int, dst []float32) error {
	opt, err := opt.checked()
	if err != nil {
		return err
	}
	s := opt.Scale
	if w <= 0 || h <= 0 || x < 0 || y < 0 || x+w > t.W || y+h > t.H {
		return fmt.Errorf("maskgen: patch %dx%d at (%d,%d) outside the %dx%d tile", w, h, x, y, t.W, t.H)
	}
	if len(dst) < w*h {
		return fmt.Errorf("maskgen: patch %dx%d needs %d values, dst has %d", w, h, w*h, len(dst))
	}
	if t.W%s != 0 || t.H%s != 0 || len(t.Aligned) != t.W*t.H || len(t.Window) != (t.W/s)*(t.H/s) {
		return fmt.Errorf("maskgen: tile labels of a %dx%d tile hold %d and %d labels, want %d and %d", t.W, t.H,
			len(t.Aligned), len(t.Window), t.W*t.H, (t.W/s)*(t.H/s))
	}
	dst = dst[:w*h]
	if opt.Crop == CropAligned {
		for r := y; r < y+h; r++ {
			if err := checkLabels(t.Aligned[r*t.W+x:r*t.W+x+w], values); err != nil {
				return err
			}
		}
		alignedPatch(t.Aligned, t.W, x, y, w, h, values, opt.ReduceSingleRegion, dst)
		return nil
	}
	if err := checkLabels(t.Window, values); err != nil {
		return err
	}
	referencePatch(t.Window, t.W/s, 0, 0, t.W/s, t.H/s, x, y, w, h, s, values, opt.ReduceSingleRegion, dst)
	return nil
}

// checkLabels reports a label that has no region value.
func checkLabels(labels []uint16, values []float32) error {
	for _, l := range labels {
		if int(l) >= len(values) {
			return fmt.Errorf("maskgen: tile label %d but only %d region values", l, len(values))
		}
	}
	return nil
}
