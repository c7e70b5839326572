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

// Tile files are the local tile cache's files (data.cache_dir): one per image and
// kind, holding that image's tiles decoded once. (A shard, shard.go, is the other
// thing: many images' tiles packed for the object store.) Format, little-endian:
//
//	[0:8]    magic "SDSRTIL1"
//	[8:12]   uint32 length L of the JSON header
//	[12:16]  uint32 CRC-32C of the JSON header
//	[16:16+L] JSON header (tileFileHeader): kind, image ID, cache key, image size, and
//	         for every tile its rectangle and the offset, length and CRC-32C of its
//	         section, offsets relative to the data start
//	padding to a multiple of 64 bytes (the data start)
//	sections, each starting at a multiple of 64 bytes
//
// The header CRC is checked when a tile file is opened; a section's CRC is checked the
// first time it is read, so opening a large cache does not read all of it.
const tileFileMagic = "SDSRTIL1"

// Tile file kinds.
const (
	kindTiles = "tiles" // section = HR tile (W*H*3 bytes) then LR tile ((W/4)*(H/4)*3 bytes)
	kindE     = "e"     // section = E of the tile, W*H little-endian float32s
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type tileFileHeader struct {
	Kind   string      `json:"kind"`
	ID     string      `json:"id"`
	Key    string      `json:"key"`
	ImageW int         `json:"image_w"`
	ImageH int         `json:"image_h"`
	Tiles  []tileEntry `json:"tiles"`
}

type tileEntry struct {
	X   int    `json:"x"`
	Y   int    `json:"y"`
	W   int    `json:"w"`
	H   int    `json:"h"`
	Off int64  `json:"off"`
	Len int64  `json:"len"`
	CRC uint32 `json:"crc"`
}

func align64(n int64) int64 { return (n + 63) &^ 63 }

// writeTileFile writes a tile file atomically; sections[i] is tile i's section.
func writeTileFile(path string, h tileFileHeader, sections [][]byte) error {
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
		copy(pre[:8], tileFileMagic)
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

// ErrDamagedTileFile is wrapped by errors about tile files that fail their checks.
var ErrDamagedTileFile = errors.New("damaged tile file")

func damaged(path, what string) error {
	return fmt.Errorf("dataset: tile cache file %s is damaged (%s): %w; delete it and `samdiffsr data pack` (or the next training start) rebuilds it", path, what, ErrDamagedTileFile)
}

// readTileFileHeader reads and checks only the header of a tile file.
func readTileFileHeader(path string) (*tileFileHeader, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var pre [16]byte
	if _, err := io.ReadFull(f, pre[:]); err != nil {
		return nil, 0, damaged(path, "short header")
	}
	return parseTileFileHeader(path, pre[:], f)
}

func parseTileFileHeader(path string, pre []byte, r io.Reader) (*tileFileHeader, int64, error) {
	if string(pre[:8]) != tileFileMagic {
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
	var h tileFileHeader
	if err := json.Unmarshal(js, &h); err != nil {
		return nil, 0, damaged(path, "header JSON")
	}
	return &h, align64(int64(16 + n)), nil
}

// tileFile is an open, memory-mapped tile file.
type tileFile struct {
	path     string
	hdr      *tileFileHeader
	data     []byte // the whole file (mmap)
	base     int64
	verified []atomic.Bool
}

// openTileFile maps a tile file and checks its header, size and kind.
func openTileFile(path, kind string) (*tileFile, error) {
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
		return nil, fmt.Errorf("dataset: map tile cache file %s: %w", path, err)
	}
	h, base, err := parseTileFileHeader(path, data[:16], bytes.NewReader(data[16:]))
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
	return &tileFile{path: path, hdr: h, data: data, base: base, verified: make([]atomic.Bool, len(h.Tiles))}, nil
}

// section returns tile i's bytes, checking its CRC on first use.
func (s *tileFile) section(i int) ([]byte, error) {
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

func (s *tileFile) close() error {
	if s == nil || s.data == nil {
		return nil
	}
	err := syscall.Munmap(s.data)
	s.data = nil
	return err
}
