package dataset

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// The words of a packed dataset (issue 13), one thing each:
//
//   - shard: the unit that travels through the object store and that a worker caches
//     — the tiles of consecutive images, in one file (this file);
//   - shard format: its layout, below; a shard is written "packed" (sections
//     predicted and zstd-compressed: what `data pack` writes and the object store
//     holds) or "raw" (sections as bytes, 64-byte aligned: what a worker's shard cache
//     maps and reads in place);
//   - manifest: the list of a packed dataset's shards with their counts, sizes and
//     digests (manifest.go);
//   - partition: a group of whole shards that the assignment gives to one rank
//     (the "virtual shard"; assign.go);
//   - tile file: the local tile cache's per-image file (tilefile.go), not a shard.
//
// Shard format (little-endian):
//
//	[0:64]   header: magic "SDSRSHD1", uint32 format version (1), zero padding
//	sections, each starting at a multiple of 64 bytes: for every tile its HR
//	         (W·H·3 bytes RGB), LR ((W/4)·(H/4)·3), and with labels its aligned label
//	         tile (W·H uint16) and reference label window ((W/4)·(H/4) uint16),
//	         maskgen.TileLabels
//	index    JSON (ShardIndex): encoding, tiling, images (with their sources'
//	         SHA-256 and region values), tiles with every section's offset, length
//	         and CRC-32C, and the images skipped as bad
//	[-32:]   trailer: uint64 index offset, uint32 index length, uint32 index CRC-32C,
//	         8 zero bytes, magic "SDSRIDX1"
//
// The index CRC is checked when a shard is opened, a section's CRC the first time it
// is read, and the whole file's SHA-256 against the manifest when it arrives and when
// a cache reuses it.
const (
	shardMagic        = "SDSRSHD1"
	shardTrailerMagic = "SDSRIDX1"
	shardVersion      = 1
	shardHeaderSize   = 64
	shardTrailerSize  = 32
	// maxShardIndex bounds the index a reader accepts.
	maxShardIndex = 256 << 20
)

// Shard encodings.
const (
	// EncodingPacked: sections predicted and zstd-compressed (shardcodec.go).
	EncodingPacked = "packed"
	// EncodingRaw: sections as plain bytes, read in place from a mapped file.
	EncodingRaw = "raw"
)

// Section kinds, in their order within a tile.
const (
	secHR = iota
	secLR
	secLabels
	secWindow
)

// ShardIndex is a shard's index.
type ShardIndex struct {
	Version  int    `json:"version"`
	Encoding string `json:"encoding"`
	// TileSize, TileThreshold and Scale are the tiling the tiles were cut with.
	TileSize      int `json:"tile_size"`
	TileThreshold int `json:"tile_threshold"`
	Scale         int `json:"scale"`
	// Labels says every tile carries its label sections.
	Labels  bool         `json:"labels"`
	Images  []ShardImage `json:"images"`
	Tiles   []ShardTile  `json:"tiles"`
	Skipped []Problem    `json:"skipped,omitempty"`
	// Sources are the digests of the source files of every image planned into the
	// shard, packed or skipped, in order: they tell a resumed pack whether the shard
	// is still current.
	Sources []ShardSource `json:"sources"`
	// RawBytes and RawSHA256 are the size and digest of the shard's raw encoding
	// (packed shards only).
	RawBytes  int64  `json:"raw_bytes,omitempty"`
	RawSHA256 string `json:"raw_sha256,omitempty"`
}

// ShardSource is the SHA-256 of an image's HR, LR (empty: made by the MATLAB
// bicubic) and label-map files (empty without labels), empty where unreadable.
type ShardSource struct {
	ID     string `json:"id"`
	HR     string `json:"hr"`
	LR     string `json:"lr,omitempty"`
	Labels string `json:"labels,omitempty"`
}

// ShardImage is one image of a shard.
type ShardImage struct {
	ID string `json:"id"`
	// W, H is the HR size once cropped to a multiple of the scale.
	W int `json:"w"`
	H int `json:"h"`
	// RegionValues and ImageValues are E of each region (index = label) for
	// masks.spe_mean "region" and "image" (maskgen.Encoder.Values).
	RegionValues []float32 `json:"region_values,omitempty"`
	ImageValues  []float32 `json:"image_values,omitempty"`
}

// ShardTile is one tile of a shard.
type ShardTile struct {
	Image    int            `json:"image"`
	X        int            `json:"x"`
	Y        int            `json:"y"`
	W        int            `json:"w"`
	H        int            `json:"h"`
	Sections []ShardSection `json:"sections"`
}

// ShardSection locates one section: Off from the file start, Len stored bytes, CRC
// the CRC-32C of the stored bytes.
type ShardSection struct {
	Off int64  `json:"off"`
	Len int64  `json:"len"`
	CRC uint32 `json:"crc"`
}

// rawLen is the length of section kind k of a w x h tile once decoded.
func rawLen(k, w, h, scale int) int64 {
	lw, lh := int64(w/scale), int64(h/scale)
	switch k {
	case secHR:
		return int64(w) * int64(h) * 3
	case secLR:
		return lw * lh * 3
	case secLabels:
		return int64(w) * int64(h) * 2
	default:
		return lw * lh * 2
	}
}

// ErrDamagedShard is wrapped by errors about shards that fail a check.
var ErrDamagedShard = errors.New("damaged shard")

func damagedShard(path, what string) error {
	return fmt.Errorf("dataset: shard %s is damaged (%s): %w", path, what, ErrDamagedShard)
}

// shardWriter writes a shard section by section; Finish writes its index.
type shardWriter struct {
	w     *bufio.Writer
	off   int64
	codec *codec
	idx   ShardIndex
}

func newShardWriter(w io.Writer, idx ShardIndex, c *codec) (*shardWriter, error) {
	sw := &shardWriter{w: bufio.NewWriterSize(w, 1<<20), codec: c, idx: idx}
	sw.idx.Version = shardVersion
	var hdr [shardHeaderSize]byte
	copy(hdr[:], shardMagic)
	binary.LittleEndian.PutUint32(hdr[8:], shardVersion)
	return sw, sw.write(hdr[:])
}

func (sw *shardWriter) write(b []byte) error {
	n, err := sw.w.Write(b)
	sw.off += int64(n)
	return err
}

func (sw *shardWriter) pad() error {
	var z [64]byte
	return sw.write(z[:align64(sw.off)-sw.off])
}

// tileData is one tile's sections, decoded.
type tileData struct {
	hr, lr []byte
	labels *maskgen.TileLabels
}

// addTile encodes and writes the sections of tile t (t.Sections is filled in).
func (sw *shardWriter) addTile(t ShardTile, d tileData) error {
	raws := [][]byte{d.hr, d.lr}
	if sw.idx.Labels {
		if d.labels == nil {
			return fmt.Errorf("dataset: tile %dx%d at (%d,%d) of image %d has no labels", t.W, t.H, t.X, t.Y, t.Image)
		}
		raws = append(raws, u16Bytes(d.labels.Aligned), u16Bytes(d.labels.Window))
	}
	t.Sections = make([]ShardSection, len(raws))
	for k, raw := range raws {
		if int64(len(raw)) != rawLen(k, t.W, t.H, sw.idx.Scale) {
			return fmt.Errorf("dataset: section %d of a %dx%d tile has %d bytes, want %d", k, t.W, t.H, len(raw), rawLen(k, t.W, t.H, sw.idx.Scale))
		}
		stored := raw
		if sw.idx.Encoding == EncodingPacked {
			stored = sw.codec.encode(k, t.W/scaleDiv(k, sw.idx.Scale), raw)
		}
		t.Sections[k] = ShardSection{Off: sw.off, Len: int64(len(stored)), CRC: crc32.Checksum(stored, castagnoli)}
		if err := sw.write(stored); err != nil {
			return err
		}
		if err := sw.pad(); err != nil {
			return err
		}
	}
	sw.idx.Tiles = append(sw.idx.Tiles, t)
	return nil
}

// scaleDiv is the width divisor of section kind k (LR-sized sections are 1/scale).
func scaleDiv(k, scale int) int {
	if k == secLR || k == secWindow {
		return scale
	}
	return 1
}

// finish writes the index and trailer and flushes.
func (sw *shardWriter) finish() error {
	js, err := json.Marshal(sw.idx)
	if err != nil {
		return err
	}
	off := sw.off
	if err := sw.write(js); err != nil {
		return err
	}
	var tr [shardTrailerSize]byte
	binary.LittleEndian.PutUint64(tr[0:], uint64(off))
	binary.LittleEndian.PutUint32(tr[8:], uint32(len(js)))
	binary.LittleEndian.PutUint32(tr[12:], crc32.Checksum(js, castagnoli))
	copy(tr[24:], shardTrailerMagic)
	if err := sw.write(tr[:]); err != nil {
		return err
	}
	return sw.w.Flush()
}

// parseShard checks the header and trailer of a shard of size bytes and returns its
// index, with every section inside the file.
func parseShard(path string, r io.ReaderAt, size int64) (*ShardIndex, error) {
	if size < shardHeaderSize+shardTrailerSize {
		return nil, damagedShard(path, "truncated")
	}
	var hdr [16]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil {
		return nil, damagedShard(path, "unreadable header")
	}
	if string(hdr[:8]) != shardMagic {
		return nil, damagedShard(path, "not a shard (bad magic)")
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != shardVersion {
		return nil, damagedShard(path, fmt.Sprintf("format version %d, this build reads %d", v, shardVersion))
	}
	var tr [shardTrailerSize]byte
	if _, err := r.ReadAt(tr[:], size-shardTrailerSize); err != nil {
		return nil, damagedShard(path, "unreadable trailer")
	}
	if string(tr[24:]) != shardTrailerMagic {
		return nil, damagedShard(path, "truncated (no trailer)")
	}
	off, n := int64(binary.LittleEndian.Uint64(tr[0:])), int64(binary.LittleEndian.Uint32(tr[8:]))
	if n > maxShardIndex || off < shardHeaderSize || off+n != size-shardTrailerSize {
		return nil, damagedShard(path, "index location")
	}
	js := make([]byte, n)
	if _, err := r.ReadAt(js, off); err != nil {
		return nil, damagedShard(path, "unreadable index")
	}
	if crc32.Checksum(js, castagnoli) != binary.LittleEndian.Uint32(tr[12:]) {
		return nil, damagedShard(path, "index checksum")
	}
	var idx ShardIndex
	if err := json.Unmarshal(js, &idx); err != nil {
		return nil, damagedShard(path, "index JSON: "+err.Error())
	}
	if err := idx.check(off); err != nil {
		return nil, damagedShard(path, err.Error())
	}
	return &idx, nil
}

// check validates an index whose sections must end by end.
func (idx *ShardIndex) check(end int64) error {
	if idx.Encoding != EncodingPacked && idx.Encoding != EncodingRaw {
		return fmt.Errorf("encoding %q", idx.Encoding)
	}
	if idx.Scale != 4 || idx.TileSize <= 0 {
		return fmt.Errorf("tiling %d/%d scale %d", idx.TileSize, idx.TileThreshold, idx.Scale)
	}
	want := 2
	if idx.Labels {
		want = 4
	}
	for i, t := range idx.Tiles {
		if t.Image < 0 || t.Image >= len(idx.Images) || t.W <= 0 || t.H <= 0 || t.W%idx.Scale != 0 || t.H%idx.Scale != 0 || len(t.Sections) != want {
			return fmt.Errorf("tile %d", i)
		}
		im := idx.Images[t.Image]
		if t.X < 0 || t.Y < 0 || t.X+t.W > im.W || t.Y+t.H > im.H {
			return fmt.Errorf("tile %d outside its image", i)
		}
		for k, s := range t.Sections {
			if s.Off < shardHeaderSize || s.Len < 0 || s.Off+s.Len > end {
				return fmt.Errorf("tile %d section %d outside the file", i, k)
			}
			if idx.Encoding == EncodingRaw && (s.Len != rawLen(k, t.W, t.H, idx.Scale) || s.Off%64 != 0) {
				return fmt.Errorf("tile %d section %d size", i, k)
			}
		}
	}
	return nil
}

// ReadShardIndex reads and checks the index of the shard at path.
func ReadShardIndex(path string) (*ShardIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return parseShard(path, f, st.Size())
}

// Shard is an open, memory-mapped shard. Reading its tiles is safe for concurrent use.
type Shard struct {
	// Path is the shard file.
	Path string
	// Index is its index.
	Index    *ShardIndex
	data     []byte
	codec    *codec
	verified []atomic.Bool
}

// OpenShard maps the shard at path and checks its header and index. Sections are
// checked when first read.
func OpenShard(path string) (*Shard, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	idx, err := parseShard(path, f, st.Size())
	if err != nil {
		return nil, err
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("dataset: map shard %s: %w", path, err)
	}
	s := &Shard{Path: path, Index: idx, data: data, verified: make([]atomic.Bool, len(idx.Tiles))}
	if idx.Encoding == EncodingPacked {
		s.codec = newCodec()
	}
	return s, nil
}

// Close unmaps the shard.
func (s *Shard) Close() error {
	if s == nil || s.data == nil {
		return nil
	}
	err := syscall.Munmap(s.data)
	s.data = nil
	if s.codec != nil {
		s.codec.close()
	}
	return err
}

// section returns the stored bytes of section k of tile i, checking the CRCs of the
// tile's sections on first use.
func (s *Shard) sections(i int) ([][]byte, error) {
	t := s.Index.Tiles[i]
	out := make([][]byte, len(t.Sections))
	for k, sec := range t.Sections {
		out[k] = s.data[sec.Off : sec.Off+sec.Len]
	}
	if !s.verified[i].Load() {
		for k, sec := range t.Sections {
			if crc32.Checksum(out[k], castagnoli) != sec.CRC {
				return nil, damagedShard(s.Path, fmt.Sprintf("tile %d section %d checksum", i, k))
			}
		}
		s.verified[i].Store(true)
	}
	return out, nil
}

// tile returns tile i's decoded sections: slices into the mapping for a raw shard
// (read only, valid until Close), decoded copies for a packed one.
func (s *Shard) tile(i int) (tileData, error) {
	if i < 0 || i >= len(s.Index.Tiles) {
		return tileData{}, fmt.Errorf("dataset: tile %d of shard %s with %d tiles", i, s.Path, len(s.Index.Tiles))
	}
	secs, err := s.sections(i)
	if err != nil {
		return tileData{}, err
	}
	t := s.Index.Tiles[i]
	if s.Index.Encoding == EncodingPacked {
		for k := range secs {
			if secs[k], err = s.codec.decode(k, t.W/scaleDiv(k, s.Index.Scale), secs[k], rawLen(k, t.W, t.H, s.Index.Scale)); err != nil {
				return tileData{}, damagedShard(s.Path, fmt.Sprintf("tile %d section %d: %v", i, k, err))
			}
		}
	}
	d := tileData{hr: secs[secHR], lr: secs[secLR]}
	if s.Index.Labels {
		d.labels = &maskgen.TileLabels{W: t.W, H: t.H, Aligned: bytesU16(secs[secLabels]), Window: bytesU16(secs[secWindow])}
	}
	return d, nil
}

// littleEndian reports whether this machine stores uint16 little-endian, so label
// sections can be read in place.
func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// u16Bytes returns the little-endian bytes of v.
func u16Bytes(v []uint16) []byte {
	out := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(out[2*i:], x)
	}
	return out
}

// bytesU16 views little-endian bytes as uint16s (in place when aligned on a
// little-endian machine, else a copy).
func bytesU16(b []byte) []uint16 {
	if len(b) == 0 {
		return nil
	}
	if littleEndian() && uintptr(unsafe.Pointer(&b[0]))%2 == 0 {
		return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
	}
	out := make([]uint16, len(b)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return out
}

// ExpandShard writes the raw encoding of the packed shard at packed to raw
// (atomically), checking every section on the way, and returns the raw file's
// SHA-256 and size: equal to the manifest's RawSHA256 and RawBytes when both files
// are intact.
func ExpandShard(packed, raw string) (string, int64, error) {
	in, err := OpenShard(packed)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	if in.Index.Encoding != EncodingPacked {
		return "", 0, fmt.Errorf("dataset: shard %s is %s, not packed", packed, in.Index.Encoding)
	}
	idx := *in.Index
	idx.Encoding, idx.Tiles, idx.RawBytes, idx.RawSHA256 = EncodingRaw, nil, 0, ""
	h := &countingHash{h: sha256.New()}
	err = fsutil.WriteAtomic(raw, 0o644, func(w io.Writer) error {
		sw, err := newShardWriter(io.MultiWriter(w, h), idx, nil)
		if err != nil {
			return err
		}
		for i, t := range in.Index.Tiles {
			d, err := in.tile(i)
			if err != nil {
				return err
			}
			if err := sw.addTile(ShardTile{Image: t.Image, X: t.X, Y: t.Y, W: t.W, H: t.H}, d); err != nil {
				return err
			}
		}
		return sw.finish()
	})
	if err != nil {
		return "", 0, fmt.Errorf("dataset: expand shard %s: %w", packed, err)
	}
	return hex.EncodeToString(h.h.Sum(nil)), h.n, nil
}
