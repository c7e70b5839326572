package dataset

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// PackOptions configure PackShards.
type PackOptions struct {
	// Out is the packed dataset's folder: Out/manifest.json and Out/shards/.
	Out string
	// TileSize and TileThreshold cut images into tiles (data.tile_size, data.tile_threshold).
	TileSize, TileThreshold int
	// MasksDir, when set, packs every image's label map (<MasksDir>/<ID>.png, written
	// by `samdiffsr masks`); an image without one is skipped.
	MasksDir string
	// ShardBytes is the raw size shards are filled up to (0: 256 MiB); a shard
	// holds whole images, at least one.
	ShardBytes int64
	// Workers is the number of shards built in parallel (0 = GOMAXPROCS).
	Workers int
	// OnImage, when set, is called after each image is packed, found current or skipped.
	OnImage func(id string)
	// Log receives warnings; nil means slog.Default().
	Log *slog.Logger
}

// PackStats counts what PackShards did.
type PackStats struct {
	// Shards is the number of shards in the manifest; Built how many were written now
	// (the others were current and kept).
	Shards, Built int
	// Decoded is the number of images decoded now.
	Decoded int
}

// DefaultShardBytes is the raw size a shard is filled up to by default.
const DefaultShardBytes = 256 << 20

// plannedImage is one image of a shard plan, sized from its file header.
type plannedImage struct {
	img      Image
	w, h     int // HR size
	srcBytes int64
}

// shardPlan is the images of one shard, decided from the headers alone so that a
// restarted pack makes the same plan.
type shardPlan struct {
	name   string
	images []plannedImage
}

// shardName is the file and object name of shard i.
func shardName(i int) string { return fmt.Sprintf("shard-%06d.sds", i) }

// PackShards packs images into a packed dataset in o.Out: shards of about
// o.ShardBytes (raw) holding the HR, LR (the official one, or the MATLAB bicubic)
// and, with o.MasksDir, the label tiles of every tile, then the manifest. Bad images
// (unreadable or corrupt, HR/LR size mismatch, missing or bad label map, too small)
// are listed in the manifest's Skipped and left out; they are never fatal.
//
// It resumes: a shard already in o.Out whose images and source digests match the
// plan is kept, so a pack killed at any point and run again finishes with the same
// manifest as one never interrupted. The error is non-nil only for a bad option, an
// unwritable folder or the end of ctx.
func PackShards(ctx context.Context, images []Image, o PackOptions) (*Manifest, PackStats, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.TileSize <= 0 || o.TileThreshold < 0 || o.TileSize%4 != 0 {
		return nil, PackStats{}, fmt.Errorf("dataset: tile size %d / threshold %d invalid (data.tile_size must be a positive multiple of 4)", o.TileSize, o.TileThreshold)
	}
	if o.Out == "" {
		return nil, PackStats{}, errors.New("dataset: pack needs an output folder (--out)")
	}
	if o.ShardBytes <= 0 {
		o.ShardBytes = DefaultShardBytes
	}
	dir := filepath.Join(o.Out, ShardDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, PackStats{}, fmt.Errorf("dataset: %w", err)
	}
	removeStaleTemps(dir, o.Log)
	plans, problems := planShards(images, o)
	for _, p := range problems {
		if o.OnImage != nil {
			o.OnImage(p.Path)
		}
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	results := make([]shardResult, len(plans))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < min(workers, max(len(plans), 1)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newCodec()
			defer c.close()
			for i := range next {
				results[i] = packShard(ctx, plans[i], o, c)
			}
		}()
	}
feed:
	for i := range plans {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, PackStats{}, err
	}
	m := &Manifest{Version: shardVersion, TileSize: o.TileSize, TileThreshold: o.TileThreshold, Scale: 4, Labels: o.MasksDir != "", Skipped: problems}
	var st PackStats
	for _, r := range results {
		if r.err != nil {
			return nil, st, r.err
		}
		if r.built {
			st.Built++
		}
		st.Decoded += r.decoded
		m.Skipped = append(m.Skipped, r.skipped...)
		m.SourceBytes += r.srcBytes
		if r.shard.Tiles == 0 {
			continue // every image of the shard was bad
		}
		m.Shards = append(m.Shards, r.shard)
		m.Images += len(r.shard.Images)
		m.Tiles += r.shard.Tiles
		m.Bytes += r.shard.Bytes
		m.RawBytes += r.shard.RawBytes
	}
	st.Shards = len(m.Shards)
	if err := WriteManifest(o.Out, m); err != nil {
		return nil, st, fmt.Errorf("dataset: write manifest: %w", err)
	}
	return m, st, nil
}

// removeStaleTemps deletes the temporary files a killed pack left.
func removeStaleTemps(dir string, log *slog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
				log.Info("removed an unfinished shard of an interrupted pack", "file", e.Name())
			}
		}
	}
}

// tileRawBytes is the raw size of the tiles of a w x h image.
func tileRawBytes(w, h int, o PackOptions) (int64, int) {
	tiles := TileGrid(0, w-w%4, h-h%4, o.TileSize, o.TileThreshold)
	var n int64
	for _, t := range tiles {
		k := rawLen(secHR, t.W, t.H, 4) + rawLen(secLR, t.W, t.H, 4)
		if o.MasksDir != "" {
			k += rawLen(secLabels, t.W, t.H, 4) + rawLen(secWindow, t.W, t.H, 4)
		}
		n += k
	}
	return n, len(tiles)
}

// planShards sizes every image from its header and fills shards in image order.
// Images whose header is unreadable, too small for a tile or without a label map
// are problems.
func planShards(images []Image, o PackOptions) ([]shardPlan, []Problem) {
	var (
		plans []shardPlan
		probs []Problem
		cur   shardPlan
		size  int64
	)
	for _, im := range images {
		w, h, err := ImageSize(im.HRPath)
		if err != nil {
			probs = append(probs, Problem{Path: im.HRPath, Msg: fmt.Sprintf("unreadable HR image: %v", err)})
			continue
		}
		raw, tiles := tileRawBytes(w, h, o)
		if tiles == 0 {
			probs = append(probs, Problem{Path: im.HRPath, Msg: fmt.Sprintf("image is %dx%d, too small for a tile (data.tile_threshold %d); remove it or lower the threshold", w, h, o.TileThreshold)})
			continue
		}
		if o.MasksDir != "" {
			if p := MaskPath(o.MasksDir, im.ID); !maskgen.LabelMapExists(p) {
				probs = append(probs, Problem{Path: im.HRPath, Msg: fmt.Sprintf("no label map %s; run `samdiffsr masks` for it", p)})
				continue
			}
		}
		if len(cur.images) > 0 && size+raw > o.ShardBytes {
			plans = append(plans, cur)
			cur, size = shardPlan{}, 0
		}
		cur.images = append(cur.images, plannedImage{img: im, w: w, h: h})
		size += raw
	}
	if len(cur.images) > 0 {
		plans = append(plans, cur)
	}
	for i := range plans {
		plans[i].name = shardName(i)
	}
	return plans, probs
}

// shardResult is what packing one planned shard gave.
type shardResult struct {
	shard    ManifestShard
	skipped  []Problem
	srcBytes int64
	built    bool
	decoded  int
	err      error
}

// packShard keeps the planned shard when current, and builds it otherwise.
func packShard(ctx context.Context, p shardPlan, o PackOptions, c *codec) shardResult {
	path := filepath.Join(o.Out, ShardDir, p.name)
	if r, ok := currentShard(path, p, o); ok {
		for _, im := range p.images {
			if o.OnImage != nil {
				o.OnImage(im.img.ID)
			}
		}
		return r
	}
	if ctx.Err() != nil {
		return shardResult{err: ctx.Err()}
	}
	r := shardResult{built: true}
	idx := ShardIndex{Encoding: EncodingPacked, TileSize: o.TileSize, TileThreshold: o.TileThreshold, Scale: 4, Labels: o.MasksDir != ""}
	rawIdx := idx
	rawIdx.Encoding = EncodingRaw
	rawHash := &countingHash{h: sha256.New()}
	err := fsutil.WriteAtomic(path, 0o644, func(w io.Writer) error {
		pw, err := newShardWriter(w, idx, c)
		if err != nil {
			return err
		}
		rw, err := newShardWriter(rawHash, rawIdx, nil)
		if err != nil {
			return err
		}
		var sources []ShardSource
		for _, pi := range p.images {
			if err := ctx.Err(); err != nil {
				return err
			}
			src, err := loadPackImage(pi, o)
			r.decoded++
			sources = append(sources, src.src)
			if o.OnImage != nil {
				o.OnImage(pi.img.ID)
			}
			if err != nil {
				var b badImage
				if !errors.As(err, &b) {
					return err
				}
				r.skipped = append(r.skipped, b.p)
				if all, _, err := sourceDigests(pi.img, o); err == nil {
					sources[len(sources)-1] = all // so a resumed pack finds the shard current
				}
				continue
			}
			r.srcBytes += src.srcBytes
			for _, sw := range []*shardWriter{pw, rw} {
				if err := src.write(sw); err != nil {
					return err
				}
			}
		}
		for _, sw := range []*shardWriter{pw, rw} {
			sw.idx.Skipped, sw.idx.Sources = r.skipped, sources
		}
		if err := rw.finish(); err != nil {
			return err
		}
		pw.idx.RawBytes, pw.idx.RawSHA256 = rawHash.n, hex.EncodeToString(rawHash.h.Sum(nil))
		return pw.finish()
	})
	if err != nil {
		r.err = fmt.Errorf("dataset: write shard %s: %w", path, err)
		return r
	}
	r.shard, r.err = manifestEntry(path, p.name)
	return r
}

// countingHash is a hash that counts the bytes written to it.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(b []byte) (int, error) {
	c.n += int64(len(b))
	return c.h.Write(b)
}

// manifestEntry describes the packed shard at path from its index and digest.
func manifestEntry(path, name string) (ManifestShard, error) {
	idx, err := ReadShardIndex(path)
	if err != nil {
		return ManifestShard{}, err
	}
	sum, n, err := fsutil.FileSHA256(path)
	if err != nil {
		return ManifestShard{}, err
	}
	e := ManifestShard{Name: name, Tiles: len(idx.Tiles), Bytes: n, SHA256: sum, RawBytes: idx.RawBytes, RawSHA256: idx.RawSHA256}
	for _, im := range idx.Images {
		e.Images = append(e.Images, ManifestImage{ID: im.ID, W: im.W, H: im.H})
	}
	return e, nil
}

// currentShard reports whether the shard at path was packed from exactly the plan's
// images (same sources, by digest) with the same tiling, and describes it if so.
func currentShard(path string, p shardPlan, o PackOptions) (shardResult, bool) {
	idx, err := ReadShardIndex(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			o.Log.Warn("rebuilding shard", "shard", path, "err", err)
		}
		return shardResult{}, false
	}
	if idx.Encoding != EncodingPacked || idx.TileSize != o.TileSize || idx.TileThreshold != o.TileThreshold || idx.Labels != (o.MasksDir != "") {
		return shardResult{}, false
	}
	if len(idx.Sources) != len(p.images) {
		return shardResult{}, false
	}
	r := shardResult{skipped: idx.Skipped}
	packed := map[string]bool{}
	for _, im := range idx.Images {
		packed[im.ID] = true
	}
	for i, pi := range p.images {
		srcs, n, err := sourceDigests(pi.img, o)
		if err != nil || srcs != idx.Sources[i] {
			return shardResult{}, false
		}
		if packed[pi.img.ID] {
			r.srcBytes += n
		}
	}
	if r.shard, err = manifestEntry(path, p.name); err != nil {
		return shardResult{}, false
	}
	return r, true
}

// sourceDigests returns the digests of an image's source files (see ShardSource)
// and their summed size.
func sourceDigests(im Image, o PackOptions) (ShardSource, int64, error) {
	out := ShardSource{ID: im.ID}
	var total int64
	for _, f := range []struct {
		path string
		dst  *string
	}{{im.HRPath, &out.HR}, {im.LRPath, &out.LR}, {labelsPath(im, o), &out.Labels}} {
		if f.path == "" {
			continue
		}
		sum, n, err := fsutil.FileSHA256(f.path)
		if err != nil {
			return out, 0, err
		}
		*f.dst, total = sum, total+n
	}
	return out, total, nil
}

// labelsPath is the label map packed with im ("" without masks).
func labelsPath(im Image, o PackOptions) string {
	if o.MasksDir == "" {
		return ""
	}
	return MaskPath(o.MasksDir, im.ID)
}
