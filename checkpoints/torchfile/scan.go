package torchfile

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// argKind is how a pickle opcode's inline argument is laid out.
type argKind int

const (
	argNone   argKind = iota
	argFixed          // n bytes
	argLine           // up to and including '\n'
	argLines2         // two lines (GLOBAL, INST)
	argLen1           // 1-byte length, then that many bytes
	argLen4           // 4-byte little-endian length, then that many bytes
	argLen8           // 8-byte little-endian length, then that many bytes
)

type opArg struct {
	kind argKind
	n    int // bytes, for argFixed
}

// opcodes lists every opcode of pickle protocols 0-5 with its inline argument
// (CPython's Lib/pickletools.py). Anything else is refused.
var opcodes = map[byte]opArg{
	'(': {}, '.': {}, '0': {}, '1': {}, '2': {},
	'F': {kind: argLine}, 'I': {kind: argLine}, 'J': {argFixed, 4}, 'K': {argFixed, 1},
	'L': {kind: argLine}, 'M': {argFixed, 2}, 'N': {}, 'P': {kind: argLine}, 'Q': {}, 'R': {},
	'S': {kind: argLine}, 'T': {kind: argLen4}, 'U': {kind: argLen1}, 'V': {kind: argLine},
	'X': {kind: argLen4}, 'a': {}, 'b': {}, 'c': {kind: argLines2}, 'd': {}, '}': {}, 'e': {},
	'g': {kind: argLine}, 'h': {argFixed, 1}, 'i': {kind: argLines2}, 'j': {argFixed, 4},
	'l': {}, ']': {}, 'o': {}, 'p': {kind: argLine}, 'q': {argFixed, 1}, 'r': {argFixed, 4},
	's': {}, 't': {}, ')': {}, 'u': {}, 'G': {argFixed, 8},
	0x80: {argFixed, 1}, 0x81: {}, 0x82: {argFixed, 1}, 0x83: {argFixed, 2}, 0x84: {argFixed, 4},
	0x85: {}, 0x86: {}, 0x87: {}, 0x88: {}, 0x89: {}, 0x8a: {kind: argLen1}, 0x8b: {kind: argLen4},
	'B': {kind: argLen4}, 'C': {kind: argLen1},
	0x8c: {kind: argLen1}, 0x8d: {kind: argLen8}, 0x8e: {kind: argLen8}, 0x8f: {}, 0x90: {},
	0x91: {}, 0x92: {}, 0x93: {}, 0x94: {}, 0x95: {argFixed, 8},
	0x96: {kind: argLen8}, 0x97: {}, 0x98: {},
}

// pickleLength walks the opcodes of the pickle at the start of data without
// building anything and returns its length (through STOP). Every length an opcode
// declares must fit in data, so the unpickler never allocates more than the input
// holds; an unknown opcode or a pickle that does not end is an error.
func pickleLength(data []byte) (int, error) {
	p := 0
	for p < len(data) {
		op := data[p]
		a, ok := opcodes[op]
		if !ok {
			return 0, fmt.Errorf("unknown pickle opcode 0x%02x at byte %d", op, p)
		}
		p++
		var need int64
		switch a.kind {
		case argFixed:
			need = int64(a.n)
		case argLine, argLines2:
			lines := 1
			if a.kind == argLines2 {
				lines = 2
			}
			for k := 0; k < lines; k++ {
				i := bytes.IndexByte(data[p:], '\n')
				if i < 0 {
					return 0, fmt.Errorf("pickle opcode %q at byte %d: no end of line", op, p-1)
				}
				p += i + 1
			}
		case argLen1, argLen4, argLen8:
			w := map[argKind]int{argLen1: 1, argLen4: 4, argLen8: 8}[a.kind]
			if len(data)-p < w {
				return 0, fmt.Errorf("pickle ends inside opcode 0x%02x at byte %d", op, p-1)
			}
			var n uint64
			switch w {
			case 1:
				n = uint64(data[p])
			case 4:
				n = uint64(binary.LittleEndian.Uint32(data[p:]))
				if op == 'T' && int32(n) < 0 {
					return 0, fmt.Errorf("pickle opcode BINSTRING at byte %d has a negative length", p-1)
				}
			case 8:
				n = binary.LittleEndian.Uint64(data[p:])
			}
			p += w
			if n > uint64(len(data)-p) {
				return 0, fmt.Errorf("pickle opcode 0x%02x at byte %d declares %d bytes, only %d are left in the file", op, p-1-w, n, len(data)-p)
			}
			need = int64(n)
		}
		if op == 0x95 { // FRAME: an 8-byte frame length that must fit too
			if len(data)-p < 8 {
				return 0, fmt.Errorf("pickle ends inside a FRAME at byte %d", p-1)
			}
			if n := binary.LittleEndian.Uint64(data[p:]); n > uint64(len(data)-p-8) {
				return 0, fmt.Errorf("pickle FRAME at byte %d declares %d bytes, only %d are left", p-1, n, len(data)-p-8)
			}
		}
		if need > int64(len(data)-p) {
			return 0, fmt.Errorf("pickle ends inside opcode 0x%02x at byte %d", op, p-1)
		}
		p += int(need)
		if op == '.' {
			return p, nil
		}
	}
	return 0, fmt.Errorf("pickle has no STOP opcode (the file is truncated)")
}
