package dataset

import (
	"context"
	"fmt"
	"runtime"
	"sync"
)

// CheckOptions configure Check.
type CheckOptions struct {
	// Workers is the number of images decoded in parallel (0 = GOMAXPROCS).
	Workers int
	// HeadersOnly reads only image headers (sizes) instead of decoding every pixel:
	// much faster, but a file truncated after its header is not noticed.
	HeadersOnly bool
	// MaxPixels refuses, from the header alone, images claiming more pixels than this
	// (data.max_pixels; <= 0: imagefile.DefaultMaxPixels).
	MaxPixels int64
	// OnImage, when set, is called after each image is checked.
	OnImage func(id string)
}

// Check decodes every image of l (HR and LR) and returns the problems found: files
// that cannot be read or decoded, and LR images whose size is not the HR size cropped
// to a multiple of 4 and divided by 4. One bad file never stops the check. Problems
// are in image order; Layout.Problems are not repeated.
func Check(ctx context.Context, l *Layout, o CheckOptions) ([]Problem, error) {
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	per := make([][]Problem, len(l.Images))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				per[i] = checkImage(l.Images[i], o)
				if o.OnImage != nil {
					o.OnImage(l.Images[i].ID)
				}
			}
		}()
	}
feed:
	for i := range l.Images {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Problem
	for _, p := range per {
		out = append(out, p...)
	}
	return out, nil
}

func imageSize(path string, o CheckOptions) (int, int, error) {
	if o.HeadersOnly {
		return ImageSizeMax(path, o.MaxPixels)
	}
	img, err := LoadRGBMax(path, o.MaxPixels)
	if err != nil {
		return 0, 0, err
	}
	return img.W, img.H, nil
}

func checkImage(im Image, o CheckOptions) []Problem {
	var out []Problem
	w, h, err := imageSize(im.HRPath, o)
	if err != nil {
		out = append(out, Problem{Path: im.HRPath, Msg: fmt.Sprintf("unreadable HR image: %v", err)})
	} else if serr := CheckHRSize(im.HRPath, w, h); serr != nil {
		out = append(out, Problem{Path: im.HRPath, Msg: serr.Error()})
	}
	if im.LRPath == "" {
		return out
	}
	lw, lh, lerr := imageSize(im.LRPath, o)
	if lerr != nil {
		return append(out, Problem{Path: im.LRPath, Msg: fmt.Sprintf("unreadable LR image: %v", lerr)})
	}
	if err == nil && (lw != (w-w%4)/4 || lh != (h-h%4)/4) {
		out = append(out, Problem{Path: im.LRPath, Msg: fmt.Sprintf("LR is %dx%d but HR %s is %dx%d, so the LR must be %dx%d (HR cropped to a multiple of 4, divided by 4); replace the LR or delete it to have it generated",
			lw, lh, im.HRPath, w, h, (w-w%4)/4, (h-h%4)/4)})
	}
	return out
}
