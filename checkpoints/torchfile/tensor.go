package torchfile

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DType is the element type of a storage.
type DType int

// The element types of torch storages this package reads.
const (
	Float32 DType = iota
	Float64
	Float16
	BFloat16
	Int64
	Int32
	Int16
	Int8
	Uint8
	Bool
)

var dtypeInfo = [...]struct {
	name string
	size int
}{
	Float32: {"float32", 4}, Float64: {"float64", 8}, Float16: {"float16", 2}, BFloat16: {"bfloat16", 2},
	Int64: {"int64", 8}, Int32: {"int32", 4}, Int16: {"int16", 2}, Int8: {"int8", 1}, Uint8: {"uint8", 1}, Bool: {"bool", 1},
}

func (d DType) String() string { return dtypeInfo[d].name }

// Size is the size of one element in bytes.
func (d DType) Size() int { return dtypeInfo[d].size }

// storage is a torch storage named by a persistent id; raw is filled in after the
// pickle is read (little-endian bytes, numel*dtype.Size() of them).
type storage struct {
	dtype DType
	key   string
	numel int
	raw   []byte
}

// Tensor is a tensor of a checkpoint: its shape and element type, and its values
// converted to float32 (exactly, except float64 values, which are rounded, and
// integers beyond ±2^24).
type Tensor struct {
	// Shape is the tensor's size (empty for a scalar).
	Shape []int
	// DType is the element type of its storage.
	DType DType
	// Data holds the values in row-major order.
	Data []float32

	storage *storage
	offset  int
	stride  []int
}

// Numel is the number of elements.
func (t *Tensor) Numel() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// materialize gathers the tensor's elements from its storage (any strides) and
// converts them to float32. Every index is checked against the storage.
func (t *Tensor) materialize() error {
	st := t.storage
	t.DType = st.dtype
	n := 1
	maxIdx := t.offset
	for i, d := range t.Shape {
		if d < 0 || t.stride[i] < 0 {
			return fmt.Errorf("size %v / stride %v: negative", t.Shape, t.stride)
		}
		if d == 0 {
			n = 0
			break
		}
		if n > math.MaxInt32/d {
			return fmt.Errorf("size %v has too many elements", t.Shape)
		}
		n *= d
		maxIdx += (d - 1) * t.stride[i]
	}
	if t.offset < 0 || (n > 0 && maxIdx >= st.numel) {
		return fmt.Errorf("size %v, stride %v at offset %d reaches element %d of a storage of %d", t.Shape, t.stride, t.offset, maxIdx, st.numel)
	}
	t.Data = make([]float32, n)
	if n == 0 {
		return nil
	}
	idx := make([]int, len(t.Shape))
	for k := range t.Data {
		e := t.offset
		for i, v := range idx {
			e += v * t.stride[i]
		}
		t.Data[k] = element(st.raw, st.dtype, e)
		for i := len(idx) - 1; i >= 0; i-- {
			idx[i]++
			if idx[i] < t.Shape[i] {
				break
			}
			idx[i] = 0
		}
	}
	return nil
}

// element reads element e of raw as float32.
func element(raw []byte, d DType, e int) float32 {
	b := raw[e*d.Size():]
	switch d {
	case Float32:
		return math.Float32frombits(binary.LittleEndian.Uint32(b))
	case Float64:
		return float32(math.Float64frombits(binary.LittleEndian.Uint64(b)))
	case Float16:
		return halfToFloat32(binary.LittleEndian.Uint16(b))
	case BFloat16:
		return math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16)
	case Int64:
		return float32(int64(binary.LittleEndian.Uint64(b)))
	case Int32:
		return float32(int32(binary.LittleEndian.Uint32(b)))
	case Int16:
		return float32(int16(binary.LittleEndian.Uint16(b)))
	case Int8:
		return float32(int8(b[0]))
	default: // Uint8, Bool
		return float32(b[0])
	}
}

// halfToFloat32 converts an IEEE 754 binary16 value exactly.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf, NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
	case frac == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal half: normalise.
	e := uint32(113)
	for frac&0x400 == 0 {
		frac <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (frac&0x3ff)<<13)
}
