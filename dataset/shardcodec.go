package dataset

import (
	"encoding/binary"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// The packed encoding of a shard section: the pixels are replaced by their
// prediction residuals, then zstd-compressed. RGB sections use the median edge
// detector of LOCO-I/JPEG-LS per channel (left a, up b, up-left c: min(a,b) when
// c ≥ max(a,b), max(a,b) when c ≤ min(a,b), else a+b−c), which leaves photos about
// as small as PNG's filters do; label sections store each label minus its left
// neighbour (runs of one region become runs of zeros).

// codec compresses and decompresses sections. Its encoder and decoder are safe for
// concurrent use.
type codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

func newCodec() *codec {
	// The options are valid constants: the constructors cannot fail with them.
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true))
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30))
	return &codec{enc: enc, dec: dec}
}

func (c *codec) close() {
	c.enc.Close()
	c.dec.Close()
}

// encode returns the packed form of section kind k, w samples wide.
func (c *codec) encode(k, w int, raw []byte) []byte {
	res := make([]byte, len(raw))
	if k == secHR || k == secLR {
		medResidual(raw, res, w)
	} else {
		leftResidual16(raw, res, w)
	}
	return c.enc.EncodeAll(res, make([]byte, 0, len(raw)/2))
}

// decode returns the raw form of a packed section of want bytes.
func (c *codec) decode(k, w int, packed []byte, want int64) ([]byte, error) {
	res, err := c.dec.DecodeAll(packed, make([]byte, 0, want))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if int64(len(res)) != want {
		return nil, fmt.Errorf("decoded %d bytes, want %d", len(res), want)
	}
	if k == secHR || k == secLR {
		medRestore(res, w)
	} else {
		leftRestore16(res, w)
	}
	return res, nil
}

// med is the median edge predictor.
func med(a, b, c byte) byte {
	mx, mn := a, b
	if b > a {
		mx, mn = b, a
	}
	switch {
	case c >= mx:
		return mn
	case c <= mn:
		return mx
	default:
		return a + b - c
	}
}

// medResidual writes px − prediction (mod 256) of an RGB image w pixels wide.
func medResidual(px, res []byte, w int) {
	stride := 3 * w
	for y := 0; y*stride < len(px); y++ {
		row := px[y*stride : (y+1)*stride]
		out := res[y*stride : (y+1)*stride]
		if y == 0 {
			copy(out[:3], row[:3])
			for x := 3; x < stride; x++ {
				out[x] = row[x] - row[x-3]
			}
			continue
		}
		up := px[(y-1)*stride : y*stride]
		for x := 0; x < 3; x++ {
			out[x] = row[x] - up[x]
		}
		for x := 3; x < stride; x++ {
			out[x] = row[x] - med(row[x-3], up[x], up[x-3])
		}
	}
}

// medRestore undoes medResidual in place.
func medRestore(b []byte, w int) {
	stride := 3 * w
	for y := 0; y*stride < len(b); y++ {
		row := b[y*stride : (y+1)*stride]
		if y == 0 {
			for x := 3; x < stride; x++ {
				row[x] += row[x-3]
			}
			continue
		}
		up := b[(y-1)*stride : y*stride]
		for x := 0; x < 3; x++ {
			row[x] += up[x]
		}
		for x := 3; x < stride; x++ {
			row[x] += med(row[x-3], up[x], up[x-3])
		}
	}
}

// leftResidual16 writes each little-endian uint16 minus its left neighbour (rows of
// w samples; the first of a row minus the one above).
func leftResidual16(raw, res []byte, w int) {
	n := len(raw) / 2
	for i := 0; i < n; i++ {
		v := binary.LittleEndian.Uint16(raw[2*i:])
		binary.LittleEndian.PutUint16(res[2*i:], v-pred16(raw, i, w))
	}
}

// leftRestore16 undoes leftResidual16 in place.
func leftRestore16(b []byte, w int) {
	n := len(b) / 2
	for i := 0; i < n; i++ {
		v := binary.LittleEndian.Uint16(b[2*i:])
		binary.LittleEndian.PutUint16(b[2*i:], v+pred16(b, i, w))
	}
}

func pred16(b []byte, i, w int) uint16 {
	switch {
	case i == 0:
		return 0
	case i%w == 0:
		return binary.LittleEndian.Uint16(b[2*(i-w):])
	default:
		return binary.LittleEndian.Uint16(b[2*(i-1):])
	}
}
