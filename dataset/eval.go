package dataset

import (
	"fmt"
)

// EvalPair is one validation image: HR cropped to a multiple of 8 (METHOD §5) and,
// when a size is asked for, centre-cropped to it; LR is its x4 counterpart.
type EvalPair struct {
	ID     string
	HR, LR *RGB
}

// LoadEvalPair loads a validation image. The HR is cropped to a multiple of 8; with
// size > 0 (data.val_size, a multiple of 8) it is then centre-cropped to at most
// size x size, the crop's corner on a multiple of 4. The LR is cut from the official
// LR when the image has one (checking its size) and made with the MATLAB bicubic
// otherwise.
func LoadEvalPair(im Image, size int) (*EvalPair, error) {
	return LoadEvalPairMax(im, size, 0)
}

// LoadEvalPairMax is LoadEvalPair with a pixel limit for the image files
// (data.max_pixels; <= 0: the default). An HR smaller than MinHRSide once cropped to a
// multiple of 8 is refused by name.
func LoadEvalPairMax(im Image, size int, maxPixels int64) (*EvalPair, error) {
	full, err := LoadRGBMax(im.HRPath, maxPixels)
	if err != nil {
		return nil, err
	}
	hr := full.CropMultiple(8)
	if hr.W < MinHRSide || hr.H < MinHRSide {
		return nil, fmt.Errorf("dataset: HR image %s is %dx%d (%dx%d once cropped to a multiple of 8); evaluation needs at least %dx%d: use a larger image or remove it",
			im.HRPath, full.W, full.H, hr.W, hr.H, MinHRSide, MinHRSide)
	}
	x, y := 0, 0
	if size > 0 {
		cw, ch := min(size-size%8, hr.W), min(size-size%8, hr.H)
		x, y = (hr.W-cw)/2/4*4, (hr.H-ch)/2/4*4
		hr = hr.Crop(x, y, cw, ch)
	}
	var lr *RGB
	if im.LRPath != "" {
		full4 := full.CropMultiple(4)
		off, err := LoadRGBMax(im.LRPath, maxPixels)
		if err != nil {
			return nil, err
		}
		if off.W != full4.W/4 || off.H != full4.H/4 {
			return nil, fmt.Errorf("dataset: LR image %s is %dx%d but must be %dx%d (HR %s cropped to a multiple of 4, divided by 4); replace it or delete it to have it generated",
				im.LRPath, off.W, off.H, full4.W/4, full4.H/4, im.HRPath)
		}
		lr = off.Crop(x/4, y/4, hr.W/4, hr.H/4)
	} else if lr, err = Imresize(hr, 0.25); err != nil {
		return nil, err
	}
	return &EvalPair{ID: im.ID, HR: hr, LR: lr}, nil
}

// EvalBatch converts one pair to a batch of one sample (HR, LR, Up as for training,
// E zero: the reference evaluates without masks).
func EvalBatch(p *EvalPair) (*Batch, error) {
	w, h := p.HR.W, p.HR.H
	b := &Batch{N: 1, H: h, W: w, HR: make([]float32, 3*w*h), Up: make([]float32, 3*w*h),
		LR: make([]float32, 3*(w/4)*(h/4)), E: make([]float32, w*h), IDs: []string{p.ID}, Refs: []PatchRef{{}}}
	plane, lplane := w*h, (w/4)*(h/4)
	for i := 0; i < plane; i++ {
		for c := 0; c < 3; c++ {
			b.HR[c*plane+i] = pixelLUT[p.HR.Pix[i*3+c]]
		}
	}
	lr := make([]float64, lplane*3)
	for i := 0; i < lplane; i++ {
		for c := 0; c < 3; c++ {
			v := p.LR.Pix[i*3+c]
			b.LR[c*lplane+i] = pixelLUT[v]
			lr[i*3+c] = float64(v) / 256
		}
	}
	r, err := NewResizer(p.LR.W, p.LR.H, 4)
	if err != nil {
		return nil, err
	}
	up := make([]float64, plane*3)
	if err := r.ResizeFloat(lr, 3, up, nil); err != nil {
		return nil, err
	}
	for i := 0; i < plane; i++ {
		for c := 0; c < 3; c++ {
			b.Up[c*plane+i] = float32(2*up[i*3+c] - 1)
		}
	}
	return b, nil
}
