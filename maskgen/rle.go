package maskgen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// RLE is a binary mask in COCO run-length encoding (pycocotools' format, which SAM's
// scripts/amg.py writes with --convert-to-rle): Size is [height, width] and Counts
// alternate runs of 0s and 1s, starting with 0s, over the pixels in column-major
// (Fortran) order — down the first column, then the second, and so on.
//
// In JSON, counts is either a list of integers (the uncompressed form) or a string
// (pycocotools' compressed form: LEB128-like 6-bit groups offset by '0', with every
// count after the third stored as the difference to the count two before it).
type RLE struct {
	// Height and Width are the mask's size.
	Height, Width int
	// Counts are the run lengths; they sum to Height*Width.
	Counts []int
}

type rleJSON struct {
	Size   []int           `json:"size"`
	Counts json.RawMessage `json:"counts"`
}

// UnmarshalJSON reads {"size": [h, w], "counts": "..." | [...]} and checks it: a
// non-negative size, non-negative runs that cover exactly h*w pixels.
func (r *RLE) UnmarshalJSON(data []byte) error {
	var j rleJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("COCO RLE: %w", err)
	}
	if len(j.Size) != 2 || j.Size[0] < 0 || j.Size[1] < 0 {
		return fmt.Errorf("COCO RLE: size %v, want [height, width]", j.Size)
	}
	h, w := j.Size[0], j.Size[1]
	raw := bytes.TrimSpace(j.Counts)
	var counts []int
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return errors.New("COCO RLE: no counts")
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("COCO RLE counts: %w", err)
		}
		var err error
		if counts, err = DecodeRLEString(s); err != nil {
			return err
		}
	default:
		if err := json.Unmarshal(raw, &counts); err != nil {
			return fmt.Errorf("COCO RLE counts: want a string or a list of integers: %w", err)
		}
	}
	rr := RLE{Height: h, Width: w, Counts: counts}
	if err := rr.Validate(); err != nil {
		return err
	}
	*r = rr
	return nil
}

// MarshalJSON writes the compressed-string form pycocotools writes.
func (r RLE) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Size   [2]int `json:"size"`
		Counts string `json:"counts"`
	}{[2]int{r.Height, r.Width}, EncodeRLEString(r.Counts)})
}

// Validate checks that the runs are non-negative and cover exactly Height*Width pixels.
func (r *RLE) Validate() error {
	if r.Height < 0 || r.Width < 0 {
		return fmt.Errorf("COCO RLE: negative size %dx%d", r.Height, r.Width)
	}
	total := int64(r.Height) * int64(r.Width)
	var sum int64
	for i, c := range r.Counts {
		if c < 0 {
			return fmt.Errorf("COCO RLE: run %d is %d; runs cannot be negative", i, c)
		}
		sum += int64(c)
		if sum > total {
			return fmt.Errorf("COCO RLE: runs cover more than the %dx%d = %d pixels of the mask (at run %d)", r.Height, r.Width, total, i)
		}
	}
	if sum != total {
		return fmt.Errorf("COCO RLE: runs cover %d pixels, the %dx%d mask has %d", sum, r.Height, r.Width, total)
	}
	return nil
}

// Area is the number of pixels set.
func (r *RLE) Area() int {
	a := 0
	for i := 1; i < len(r.Counts); i += 2 {
		a += r.Counts[i]
	}
	return a
}

// Decode returns the mask as row-major booleans (Height rows of Width).
func (r *RLE) Decode() ([]bool, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	m := make([]bool, r.Height*r.Width)
	r.forEachSet(func(i int) { m[i] = true })
	return m, nil
}

// forEachSet calls f with the row-major index of every set pixel, column by column.
// The runs must be valid.
func (r *RLE) forEachSet(f func(i int)) {
	h, w := r.Height, r.Width
	p := 0 // column-major position
	for k, c := range r.Counts {
		if k%2 == 1 {
			for q := p; q < p+c; q++ {
				f((q%h)*w + q/h)
			}
		}
		p += c
	}
}

// DecodeRLEString decodes pycocotools' compressed counts string (rleFrString).
func DecodeRLEString(s string) ([]int, error) {
	var counts []int
	for p := 0; p < len(s); {
		var x int64
		k := 0
		for more := true; more; {
			if p >= len(s) {
				return nil, fmt.Errorf("COCO RLE counts string ends inside a number (at byte %d)", p)
			}
			c := int64(s[p]) - 48
			if c < 0 || c > 63 {
				return nil, fmt.Errorf("COCO RLE counts string: byte %d is %q, outside '0'..'o'", p, s[p])
			}
			if k > 6 {
				return nil, fmt.Errorf("COCO RLE counts string: number at byte %d is too long", p)
			}
			x |= (c & 0x1f) << (5 * k)
			more = c&0x20 != 0
			p++
			k++
			if !more && c&0x10 != 0 {
				x |= -1 << (5 * k)
			}
		}
		if m := len(counts); m > 2 {
			x += int64(counts[m-2])
		}
		if x < 0 || x > 1<<40 {
			return nil, fmt.Errorf("COCO RLE counts string: run %d decodes to %d", len(counts), x)
		}
		counts = append(counts, int(x))
	}
	return counts, nil
}

// EncodeRLEString encodes counts as pycocotools' compressed string (rleToString).
func EncodeRLEString(counts []int) string {
	var b []byte
	for i := range counts {
		x := int64(counts[i])
		if i > 2 {
			x -= int64(counts[i-2])
		}
		for more := true; more; {
			c := byte(x & 0x1f)
			x >>= 5
			if c&0x10 != 0 {
				more = x != -1
			} else {
				more = x != 0
			}
			if more {
				c |= 0x20
			}
			b = append(b, c+48)
		}
	}
	return string(b)
}

// EncodeRLE run-length encodes a row-major w×h mask in COCO's column-major order.
func EncodeRLE(mask []bool, w, h int) (RLE, error) {
	if w < 0 || h < 0 || len(mask) != w*h {
		return RLE{}, fmt.Errorf("maskgen: encode RLE: %d values for a %dx%d mask", len(mask), w, h)
	}
	r := RLE{Height: h, Width: w}
	cur, run := false, 0
	for x := 0; x < w; x++ {
		for y := 0; y < h; y++ {
			if mask[y*w+x] != cur {
				r.Counts = append(r.Counts, run)
				cur, run = !cur, 0
			}
			run++
		}
	}
	r.Counts = append(r.Counts, run)
	return r, nil
}
