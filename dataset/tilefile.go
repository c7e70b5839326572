package dataset

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
)

// Shard file format (one file per image and kind, little-endian):
//
//	[0:8]    magic "SDSRSHD1"
//	[8:12]   uint32 length L of the JSON header
//	[12:16]  uint32 CRC-32C of the JSON header
//	[16:16+L] JSON header (shardHeader): kind, image ID, cache key, image size, and
//	         for every tile its rectangle and the offset, length and CRC-32C of its
//	         section, offsets relative to the data start
//	padding to a multiple of 64 bytes (the data start)
//	sections, each starting at a multiple of 64 bytes
//
// The header CRC is checked when a shard is opened; a section's CRC is checked the
// first time it is read, so opening a large cache does not read all of it.
const shardMagic = "SDSRSHD1"

// Shard kinds.
const (
	kindTiles = "tiles" // section = HR tile (W*H*3 bytes) then LR tile ((W/4)*(H/4)*3 bytes)
	kindE     = "e"     // section = E of the tile, W*H little-endian float32s
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type shardHeader struct {
	Kind   string      `json:"kind"`
	ID     string      `json:"id"`
	Key    string      `json:"key"`
	ImageW int         `json:"image_w"`
	ImageH int         `json:"image_h"`
	Tiles  []shardTile `json:"tiles"`
}

type shardTile struct {
	X   int    `json:"x"`
	Y   int    `json:"y"`
	W   int    `json:"w"`
	H   int    `json:"h"`
	Off int64  `json:"off"`
	Len int64  `json:"len"`
	CRC uint32 `json:"crc"`
}

func align64(n int64) int64 { return (n + 63) &^ 63 }

// writeShard writes a shard atomically; sections[i] is tile i's section.
func writeShard(path string, h shardHeader, sections [][]byte) error {
	var off int64
	for i, s := range sections {
		h.Tiles[i].Off = off
		h.Tiles[i].Len = int64(len(s))
		h.Tiles[i].CRC = crc32.Checksum(s, castagnoli)
		off = align64(off + int64(len(s)))
	}
	js, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return fsutil.WriteAtomic(path, 0o644, func(w io.Writer) error {
		var pre [16]byte
		copy(pre[:8], shardMagic)
		binary.LittleEndian.PutUint32(pre[8:], uint32(len(js)))
		binary.LittleEndian.PutUint32(pre[12:], crc32.Checksum(js, castagnoli))
		pos := int64(16 + len(js))
		if _, err := w.Write(pre[:]); err != nil {
			return err
		}
		if _, err := w.Write(js); err != nil {
			return err
		}
		pad := make([]byte, 64)
		if _, err := w.Write(pad[:align64(pos)-pos]); err != nil {
			return err
		}
		for _, s := range sections {
			if _, err := w.Write(s); err != nil {
				return err
			}
			if n := align64(int64(len(s))) - int64(len(s)); n > 0 {
				if _, err := w.Write(pad[:n]); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// ErrDamagedShard is wrapped by errors about cache shards that fail their checks.
var ErrDamagedShard = errors.New("damaged shard")

func damaged(path, what string) error {
	return fmt.Errorf("dataset: cache shard %s is damaged (%s): %w; delete it and `samdiffsr data pack` (or the next training start) rebuilds it", path, what, ErrDamagedShard)
}

// readShardHeader reads and checks only the header of a shard.
func readShardHeader(path string) (*shardHeader, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var pre [16]byte
	if _, err := io.ReadFull(f, pre[:]); err != nil {
		return nil, 0, damaged(path, "short header")
	}
	return parseShardHeader(path, pre[:], f)
}

func parseShardHeader(path string, pre []byte, r io.Reader) (*shardHeader, int64, error) {
	if string(pre[:8]) != shardMagic {
		return nil, 0, damaged(path, "bad magic")
	}
	n := binary.LittleEndian.Uint32(pre[8:])
	if n > 64<<20 {
		return nil, 0, damaged(path, "header length")
	}
	js := make([]byte, n)
	if _, err := io.ReadFull(r, js); err != nil {
		return nil, 0, damaged(path, "short header")
	}
	if crc32.Checksum(js, castagnoli) != binary.LittleEndian.Uint32(pre[12:]) {
		return nil, 0, damaged(path, "header checksum")
	}
	var h shardHeader
	if err := json.Unmarshal(js, &h); err != nil {
		return nil, 0, damaged(path, "header JSON")
	}
	return &h, align64(int64(16 + n)), nil
}

// shard is an open, memory-mapped shard.
type shard struct {
	path     string
	hdr      *shardHeader
	data     []byte // the whole file (mmap)
	base     int64
	verified []atomic.Bool
}

// openShard maps a shard and checks its header, size and kind.
func openShard(path, kind string) (*shard, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < 16 {
		return nil, damaged(path, "truncated")
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("dataset: map cache shard %s: %w", path, err)
	}
	h, base, err := parseShardHeader(path, data[:16], bytes.NewReader(data[16:]))
	if err == nil && h.Kind != kind {
		err = damaged(path, "kind "+h.Kind+", want "+kind)
	}
	if err == nil {
		for _, t := range h.Tiles {
			if t.Off < 0 || t.Len < 0 || base+t.Off+t.Len > size {
				err = damaged(path, "truncated")
				break
			}
		}
	}
	if err != nil {
		syscall.Munmap(data)
		return nil, err
	}
	return &shard{path: path, hdr: h, data: data, base: base, verified: make([]atomic.Bool, len(h.Tiles))}, nil
}

// section returns tile i's bytes, checking its CRC on first use.
func (s *shard) section(i int) ([]byte, error) {
	t := s.hdr.Tiles[i]
	b := s.data[s.base+t.Off : s.base+t.Off+t.Len]
	if !s.verified[i].Load() {
		if crc32.Checksum(b, castagnoli) != t.CRC {
			return nil, damaged(s.path, fmt.Sprintf("tile %d checksum", i))
		}
		s.verified[i].Store(true)
	}
	return b, nil
}

func (s *shard) close() error {
	if s == nil || s.data == nil {
		return nil
	}
	err := syscall.Munmap(s.data)
	s.data = nil
	return err
}
