package collective

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"unsafe"
)

// Frame layout (little-endian), headerSize bytes, followed by Length payload bytes:
//
//	0  magic      uint32 frameMagic
//	4  kind       uint8  (kindReduce, kindBroadcast, kindDigest)
//	5  reserved   [3]byte
//	8  generation uint64
//	16 step       int64
//	24 seq        uint64 operation sequence number within the ring
//	32 index      uint32 frame index within the operation
//	36 length     uint32 payload bytes
//	40 total      uint64 bytes of the whole operation's buffer (lengths must agree)
//	48 crc        uint32 CRC-32C of the payload (broadcast frames; 0 otherwise)
//	52 reserved   uint32
const (
	headerSize = 56
	frameMagic = 0x31434453 // "SDC1"
)

// Frame kinds.
const (
	kindReduce    = 1 // an all-reduce chunk of float32s
	kindBroadcast = 2 // a broadcast chunk of bytes
	kindDigest    = 3 // the SHA-256 of a whole broadcast buffer
)

// header is the decoded fixed part of a frame.
type header struct {
	kind       uint8
	generation uint64
	step       int64
	seq        uint64
	index      uint32
	length     uint32
	total      uint64
	crc        uint32
}

func (h *header) encode(b *[headerSize]byte) {
	*b = [headerSize]byte{}
	binary.LittleEndian.PutUint32(b[0:], frameMagic)
	b[4] = h.kind
	binary.LittleEndian.PutUint64(b[8:], h.generation)
	binary.LittleEndian.PutUint64(b[16:], uint64(h.step))
	binary.LittleEndian.PutUint64(b[24:], h.seq)
	binary.LittleEndian.PutUint32(b[32:], h.index)
	binary.LittleEndian.PutUint32(b[36:], h.length)
	binary.LittleEndian.PutUint64(b[40:], h.total)
	binary.LittleEndian.PutUint32(b[48:], h.crc)
}

// errBadMagic is returned by decode for bytes that are not a frame.
var errBadMagic = errors.New("not a collective frame (bad magic)")

func (h *header) decode(b *[headerSize]byte) error {
	if binary.LittleEndian.Uint32(b[0:]) != frameMagic {
		return errBadMagic
	}
	h.kind = b[4]
	h.generation = binary.LittleEndian.Uint64(b[8:])
	h.step = int64(binary.LittleEndian.Uint64(b[16:]))
	h.seq = binary.LittleEndian.Uint64(b[24:])
	h.index = binary.LittleEndian.Uint32(b[32:])
	h.length = binary.LittleEndian.Uint32(b[36:])
	h.total = binary.LittleEndian.Uint64(b[40:])
	h.crc = binary.LittleEndian.Uint32(b[48:])
	return nil
}

// check compares a received header with the one the receiver expects (want) and
// explains the first difference. The order of the checks matters: a frame of
// another generation is reported as such before anything else.
func (h *header) check(want *header) error {
	switch {
	case h.generation != want.generation:
		return fmt.Errorf("sent a frame of generation %d, this ring is generation %d: refused", h.generation, want.generation)
	case h.step != want.step:
		return fmt.Errorf("is at step %d, this rank at step %d: ranks out of lockstep", h.step, want.step)
	case h.kind != want.kind:
		return fmt.Errorf("sent a %s frame, this rank expects a %s frame: ranks run different operations", kindName(h.kind), kindName(want.kind))
	case h.seq != want.seq:
		return fmt.Errorf("is at operation %d, this rank at operation %d: ranks out of lockstep", h.seq, want.seq)
	case h.total != want.total:
		return fmt.Errorf("has a buffer of %d bytes, this rank %d bytes: buffers must have the same length on every rank", h.total, want.total)
	case h.index != want.index || h.length != want.length:
		return fmt.Errorf("sent frame %d of %d bytes, this rank expects frame %d of %d bytes", h.index, h.length, want.index, want.length)
	}
	return nil
}

func kindName(k uint8) string {
	switch k {
	case kindReduce:
		return "all-reduce"
	case kindBroadcast:
		return "broadcast"
	case kindDigest:
		return "broadcast digest"
	}
	return fmt.Sprintf("unknown (%d)", k)
}

// chunkCRC is the checksum broadcast frames carry.
func chunkCRC(p []byte) uint32 {
	return crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)) // hash/crc32 builds the table once
}

// checkChunk verifies a broadcast chunk's payload against its header's CRC.
func checkChunk(index, crc uint32, p []byte) error {
	if got := chunkCRC(p); got != crc {
		return fmt.Errorf("sent broadcast frame %d corrupt (CRC-32C %08x, header says %08x)", index, got, crc)
	}
	return nil
}

// checkDigest verifies a whole broadcast buffer against the root's SHA-256.
func checkDigest(got, want []byte) error {
	if len(want) != sha256.Size || string(got) != string(want) {
		return fmt.Errorf("relayed a corrupt broadcast buffer (SHA-256 %x, the root's is %x)", got, want)
	}
	return nil
}

// floatBytes views a float32 slice as its bytes (native order, little-endian on
// every host a ring forms on).
func floatBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

// littleEndian reports whether the host stores integers little-endian.
func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// addTo sets dst[i] += src[i] for every i of dst.
func addTo(dst, src []float32) {
	src = src[:len(dst)]
	i := 0
	for ; i+8 <= len(dst); i += 8 {
		d := dst[i : i+8 : i+8]
		s := src[i : i+8 : i+8]
		d[0] += s[0]
		d[1] += s[1]
		d[2] += s[2]
		d[3] += s[3]
		d[4] += s[4]
		d[5] += s[5]
		d[6] += s[6]
		d[7] += s[7]
	}
	for ; i < len(dst); i++ {
		dst[i] += src[i]
	}
}
