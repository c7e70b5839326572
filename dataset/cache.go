package dataset

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/samdiffsr/samdiffsr/configs"
)

// CacheDir returns the cache folder of a data configuration: data.cache_dir, or
// <data.root>/.samdiffsr-cache when empty.
func CacheDir(d configs.Data) string {
	if d.CacheDir != "" {
		return d.CacheDir
	}
	return filepath.Join(d.Root, ".samdiffsr-cache")
}

// CacheOptions configure BuildCache.
type CacheOptions struct {
	// Dir is the cache folder.
	Dir string
	// TileSize and TileThreshold cut images into tiles (data.tile_size, data.tile_threshold).
	TileSize, TileThreshold int
	// Masks, when not nil, also packs the E of every tile (masks are then required).
	Masks *MaskDir
	// Workers is the number of images decoded in parallel (0 = GOMAXPROCS).
	Workers int
	// OnImage, when set, is called after each image is packed or found up to date.
	OnImage func(id string, rebuilt bool)
	// Log receives warnings (rebuilt damaged tile files); nil means slog.Default().
	Log *slog.Logger
}

// CacheStats counts what BuildCache did.
type CacheStats struct {
	// Images is how many images are in the cache; Rebuilt how many were decoded now.
	Images, Rebuilt, Tiles int
	// DecodeTime is the summed time spent decoding, downscaling and writing rebuilt images.
	DecodeTime time.Duration
}

// Cache is an opened tile cache: every tile of every packed image, memory-mapped.
// It is safe for concurrent reads. Close unmaps it.
type Cache struct {
	// Dir is the cache folder.
	Dir string
	// Images are the packed images (those that failed are left out, see BuildCache).
	Images []Image
	// Tiles lists every tile, Tile.Image indexing Images.
	Tiles []Tile
	// HasE reports whether E was packed (masks configured).
	HasE bool

	loc    []tileLoc
	files  []*tileFile
	efiles []*tileFile
}

type tileLoc struct{ img, idx int }

func fileKey(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s:%d:%d", filepath.Base(path), st.Size(), st.ModTime().UnixNano()), nil
}

func tilesKey(im Image, o CacheOptions) (string, error) {
	hk, err := fileKey(im.HRPath)
	if err != nil {
		return "", fmt.Errorf("dataset: HR image %s: %w", im.HRPath, err)
	}
	lk := "generated"
	if im.LRPath != "" {
		if lk, err = fileKey(im.LRPath); err != nil {
			return "", fmt.Errorf("dataset: LR image %s: %w", im.LRPath, err)
		}
	}
	return fmt.Sprintf("tiles/v1 hr=%s lr=%s tile=%d thresh=%d scale=4", hk, lk, o.TileSize, o.TileThreshold), nil
}

func eKey(m *MaskDir, img int, o CacheOptions) (string, error) {
	k, err := fileKey(m.Path(img))
	if err != nil {
		return "", fmt.Errorf("dataset: label map %s: %w", m.Path(img), err)
	}
	opt := m.Options()
	return fmt.Sprintf("e/v1 labels=%s mean=%s crop=%s reduce=%v scale=%d tile=%d thresh=%d",
		k, opt.Mean, opt.Crop, opt.ReduceSingleRegion, opt.Scale, o.TileSize, o.TileThreshold), nil
}

func (o CacheOptions) tilesPath(id string) string {
	return filepath.Join(o.Dir, "tiles", filepath.FromSlash(id)+".tile")
}

func (o CacheOptions) ePath(id string) string {
	opt := o.Masks.Options()
	r := 0
	if opt.ReduceSingleRegion {
		r = 1
	}
	dir := fmt.Sprintf("e-%s-%s-r%d", opt.Mean, opt.Crop, r)
	return filepath.Join(o.Dir, dir, filepath.FromSlash(id)+".tile")
}

// upToDate reports whether the tile file at path exists with the given key.
func upToDate(path, key string, log *slog.Logger) bool {
	h, _, err := readTileFileHeader(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("rebuilding tile cache file", "file", path, "err", err)
		}
		return false
	}
	return h.Key == key
}

// cacheImage decodes one image and writes its tile file (and E file) when stale.
func cacheImage(o CacheOptions, i int, im Image) (rebuilt bool, err error) {
	log := o.Log
	key, err := tilesKey(im, o)
	if err != nil {
		return false, err
	}
	tp := o.tilesPath(im.ID)
	var ekey string
	if o.Masks != nil {
		if ekey, err = eKey(o.Masks, i, o); err != nil {
			return false, err
		}
	}
	needTiles := !upToDate(tp, key, log)
	needE := o.Masks != nil && !upToDate(o.ePath(im.ID), ekey, log)
	if !needTiles && !needE {
		return false, nil
	}
	full, err := LoadRGB(im.HRPath)
	if err != nil {
		return true, err
	}
	hr := full.CropMultiple(4)
	tiles := TileGrid(i, hr.W, hr.H, o.TileSize, o.TileThreshold)
	if len(tiles) == 0 {
		return true, fmt.Errorf("dataset: image %s is %dx%d, too small for a tile (data.tile_threshold %d); remove it or lower the threshold",
			im.HRPath, full.W, full.H, o.TileThreshold)
	}
	if needTiles {
		var lr *RGB
		if im.LRPath != "" {
			if lr, err = LoadRGB(im.LRPath); err != nil {
				return true, err
			}
			if lr.W != hr.W/4 || lr.H != hr.H/4 {
				return true, fmt.Errorf("dataset: LR image %s is %dx%d but its HR %s is %dx%d (%dx%d once cropped to a multiple of 4), so the LR must be %dx%d; replace it or delete it to have the LR generated",
					im.LRPath, lr.W, lr.H, im.HRPath, full.W, full.H, hr.W, hr.H, hr.W/4, hr.H/4)
			}
		} else if lr, err = Imresize(hr, 0.25); err != nil {
			return true, err
		}
		h := tileFileHeader{Kind: kindTiles, ID: im.ID, Key: key, ImageW: hr.W, ImageH: hr.H, Tiles: make([]tileEntry, len(tiles))}
		sections := make([][]byte, len(tiles))
		for k, t := range tiles {
			h.Tiles[k] = tileEntry{X: t.X, Y: t.Y, W: t.W, H: t.H}
			sec := make([]byte, 0, t.W*t.H*3+(t.W/4)*(t.H/4)*3)
			sec = append(sec, hr.Crop(t.X, t.Y, t.W, t.H).Pix...)
			sec = append(sec, lr.Crop(t.X/4, t.Y/4, t.W/4, t.H/4).Pix...)
			sections[k] = sec
		}
		if err := writeTileFile(tp, h, sections); err != nil {
			return true, fmt.Errorf("dataset: write tile cache file %s: %w", tp, err)
		}
	}
	if needE {
		if err := o.Masks.CheckSize(i, full.W, full.H); err != nil {
			return true, err
		}
		h := tileFileHeader{Kind: kindE, ID: im.ID, Key: ekey, ImageW: hr.W, ImageH: hr.H, Tiles: make([]tileEntry, len(tiles))}
		sections := make([][]byte, len(tiles))
		for k, t := range tiles {
			h.Tiles[k] = tileEntry{X: t.X, Y: t.Y, W: t.W, H: t.H}
			e := make([]float32, t.W*t.H)
			if err := o.Masks.TileE(t, e); err != nil {
				return true, err
			}
			sec := make([]byte, 4*len(e))
			for j, v := range e {
				binary.LittleEndian.PutUint32(sec[4*j:], math.Float32bits(v))
			}
			sections[k] = sec
		}
		ep := o.ePath(im.ID)
		if err := writeTileFile(ep, h, sections); err != nil {
			return true, fmt.Errorf("dataset: write tile cache file %s: %w", ep, err)
		}
	}
	return true, nil
}

// BuildCache makes sure every image has an up-to-date tile file in the cache (decoding, making
// the LR and cutting tiles only for new or changed images: a tile file is keyed by the
// image files' names, sizes and modification times and the tiling parameters; a
// damaged tile file is rebuilt), then opens the cache. Images that cannot be packed
// (corrupt file, HR/LR size mismatch, missing or bad mask, too small) are left out of
// the cache and reported as problems; the error is non-nil only when nothing can be
// opened or ctx ends.
func BuildCache(ctx context.Context, images []Image, o CacheOptions) (*Cache, CacheStats, []Problem, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.TileSize <= 0 || o.TileThreshold < 0 {
		return nil, CacheStats{}, nil, fmt.Errorf("dataset: tile size %d / threshold %d invalid (data.tile_size, data.tile_threshold)", o.TileSize, o.TileThreshold)
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		mu    sync.Mutex
		stats CacheStats
		probs = make([]*Problem, len(images))
		wg    sync.WaitGroup
		next  = make(chan int)
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				start := time.Now()
				rebuilt, err := cacheImage(o, i, images[i])
				el := time.Since(start)
				mu.Lock()
				if err != nil {
					probs[i] = &Problem{Path: images[i].HRPath, Msg: err.Error()}
				} else if rebuilt {
					stats.Rebuilt++
					stats.DecodeTime += el
				}
				mu.Unlock()
				if o.OnImage != nil {
					o.OnImage(images[i].ID, rebuilt)
				}
			}
		}()
	}
feed:
	for i := range images {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, stats, nil, err
	}
	var problems []Problem
	var ok []Image
	okIdx := map[int]int{}
	for i, p := range probs {
		if p != nil {
			problems = append(problems, *p)
			continue
		}
		okIdx[i] = len(ok)
		ok = append(ok, images[i])
	}
	c, err := openCache(ok, o)
	if err != nil {
		return nil, stats, problems, err
	}
	stats.Images = len(c.Images)
	stats.Tiles = len(c.Tiles)
	return c, stats, problems, nil
}

// OpenCache opens the tile files of images without building anything: a missing or
// stale tile file is an error saying to run `samdiffsr data pack`.
func OpenCache(images []Image, o CacheOptions) (*Cache, error) {
	for _, im := range images {
		key, err := tilesKey(im, o)
		if err != nil {
			return nil, err
		}
		if h, _, err := readTileFileHeader(o.tilesPath(im.ID)); err != nil || h.Key != key {
			if err == nil {
				err = errors.New("stale: the image or the tiling changed")
			}
			return nil, fmt.Errorf("dataset: tile cache file of %s: %w; run `samdiffsr data pack`", im.ID, err)
		}
	}
	return openCache(images, o)
}

func openCache(images []Image, o CacheOptions) (*Cache, error) {
	c := &Cache{Dir: o.Dir, Images: images, HasE: o.Masks != nil}
	fail := func(err error) (*Cache, error) {
		c.Close()
		return nil, err
	}
	for i, im := range images {
		s, err := openTileFile(o.tilesPath(im.ID), kindTiles)
		if err != nil {
			return fail(fmt.Errorf("dataset: open cache of %s: %w", im.ID, err))
		}
		c.files = append(c.files, s)
		if o.Masks != nil {
			es, err := openTileFile(o.ePath(im.ID), kindE)
			if err != nil {
				return fail(fmt.Errorf("dataset: open mask cache of %s: %w", im.ID, err))
			}
			if len(es.hdr.Tiles) != len(s.hdr.Tiles) {
				es.close()
				return fail(damaged(es.path, "tile count differs from the image's tile file"))
			}
			c.efiles = append(c.efiles, es)
		}
		for k, t := range s.hdr.Tiles {
			c.Tiles = append(c.Tiles, Tile{Image: i, X: t.X, Y: t.Y, W: t.W, H: t.H})
			c.loc = append(c.loc, tileLoc{img: i, idx: k})
		}
	}
	return c, nil
}

// AllTiles returns every tile of the cache (TileSource).
func (c *Cache) AllTiles() []Tile { return c.Tiles }

// ImageID names image img of the cache (TileSource).
func (c *Cache) ImageID(img int) string { return c.Images[img].ID }

// Tile returns the pixels (and E, when packed) of tile i. The slices point into the
// mapped files: read only, valid until Close.
func (c *Cache) Tile(i int) (*TileView, error) {
	if i < 0 || i >= len(c.loc) {
		return nil, fmt.Errorf("dataset: tile %d of %d", i, len(c.loc))
	}
	l := c.loc[i]
	t := c.Tiles[i]
	sec, err := c.files[l.img].section(l.idx)
	if err != nil {
		return nil, err
	}
	n := t.W * t.H * 3
	if len(sec) != n+(t.W/4)*(t.H/4)*3 {
		return nil, damaged(c.files[l.img].path, "section size")
	}
	tv := &TileView{Tile: t, HR: sec[:n], LR: sec[n:]}
	if c.efiles != nil {
		e, err := c.efiles[l.img].section(l.idx)
		if err != nil {
			return nil, err
		}
		if len(e) != t.W*t.H*4 {
			return nil, damaged(c.efiles[l.img].path, "section size")
		}
		tv.E = e
	}
	return tv, nil
}

// Close unmaps every tile file.
func (c *Cache) Close() error {
	var first error
	for _, s := range append(c.files, c.efiles...) {
		if err := s.close(); err != nil && first == nil {
			first = err
		}
	}
	c.files, c.efiles = nil, nil
	return first
}

// BuildCacheConfig discovers the training images of cfg (data.root; with data.synthetic.n
// > 0 the images are generated into data.synthetic.dir first when absent) and packs
// them into the cache (data.cache_dir). With withMasks, the E of every tile is packed
// too from masks.dir, and an image without a label map is an error naming it.
// Discovery problems (missing LR pairs and the like) are logged as warnings; the
// problems returned are the images left out of the cache.
func BuildCacheConfig(ctx context.Context, cfg configs.Config, withMasks bool, o CacheOptions) (*Cache, CacheStats, []Problem, error) {
	d := cfg.Data
	if d.Synthetic.N > 0 {
		if _, err := os.Stat(d.Root); errors.Is(err, fs.ErrNotExist) {
			if _, _, err := WriteSynth(ctx, d.Synthetic.Dir, SynthOptions{N: d.Synthetic.N, Val: d.ValImages,
				W: d.Synthetic.Width, H: d.Synthetic.Height, Seed: cfg.Seed}); err != nil {
				return nil, CacheStats{}, nil, err
			}
		}
	}
	l, err := Discover(d.Root)
	if err != nil {
		return nil, CacheStats{}, nil, err
	}
	images := l.Train()
	o.Dir = CacheDir(d)
	o.TileSize, o.TileThreshold = d.TileSize, d.TileThreshold
	if withMasks {
		if cfg.Masks.Dir == "" {
			return nil, CacheStats{}, nil, fmt.Errorf("dataset: masks are needed but masks.dir is empty; set it to the folder `samdiffsr masks` writes")
		}
		md, err := NewMaskDir(cfg.Masks.Dir, images, SPEOptions(cfg.Masks, d.Scale), 0)
		if err != nil {
			return nil, CacheStats{}, nil, err
		}
		o.Masks = md
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	for _, p := range l.Problems {
		o.Log.Warn("dataset", "file", p.Path, "problem", p.Msg)
	}
	return BuildCache(ctx, images, o)
}
