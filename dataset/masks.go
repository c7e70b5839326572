package dataset

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// MaskSource gives the structural mask E of training patches.
type MaskSource interface {
	// PatchE writes E (w*h values, row-major) of the HR patch with top-left (x, y)
	// in image coordinates of the image of tile t; t is the window the reference
	// crop mode upsamples (the patch lies inside it).
	PatchE(t Tile, x, y, w, h int, dst []float32) error
}

// MaskPath is where the label map of image id lives: <dir>/<id>.png (id may contain '/').
func MaskPath(dir, id string) string { return filepath.Join(dir, filepath.FromSlash(id)+".png") }

// SPEOptions converts the masks configuration to maskgen's SPE options.
func SPEOptions(m configs.Masks, scale int) maskgen.SPEOptions {
	return maskgen.SPEOptions{Mean: m.SPEMean, Crop: m.MaskCrop, ReduceSingleRegion: m.ReduceSingleRegion, Scale: scale}
}

// MaskDir is a MaskSource reading label maps from a folder (<dir>/<ID>.png plus its
// JSON sidecar, written by `samdiffsr masks`) and encoding E with maskgen. It keeps
// the encoders of the most recently used images (label maps are large: 2 bytes per
// pixel). It is safe for concurrent use.
type MaskDir struct {
	dir    string
	images []Image
	opt    maskgen.SPEOptions
	keep   int

	mu    sync.Mutex
	cache map[int]*maskEntry
	tick  uint64
}

type maskEntry struct {
	enc     *maskgen.Encoder
	w, h    int
	lastUse uint64
}

// NewMaskDir checks that every image has a label map in dir and returns the source.
// A missing label map is an error naming the image and the expected path (and how
// many others are missing). keep bounds the number of encoders held (0 means 8).
func NewMaskDir(dir string, images []Image, opt maskgen.SPEOptions, keep int) (*MaskDir, error) {
	var missing []string
	for _, im := range images {
		if p := MaskPath(dir, im.ID); !maskgen.LabelMapExists(p) {
			missing = append(missing, fmt.Sprintf("image %s: expected label map %s (and %s)", im.ID, p, maskgen.SidecarPath(p)))
		}
	}
	if len(missing) > 0 {
		more := ""
		if len(missing) > 3 {
			more = fmt.Sprintf("\n(and %d more images without masks)", len(missing)-3)
			missing = missing[:3]
		}
		return nil, fmt.Errorf("dataset: masks missing in %s:\n%s%s\nrun `samdiffsr masks` to generate them, or set masks.dir to the folder that holds them",
			dir, strings.Join(missing, "\n"), more)
	}
	if keep <= 0 {
		keep = 8
	}
	return &MaskDir{dir: dir, images: images, opt: opt, keep: keep, cache: map[int]*maskEntry{}}, nil
}

// Path returns the label-map path of image i.
func (m *MaskDir) Path(i int) string { return MaskPath(m.dir, m.images[i].ID) }

// Options returns the SPE options.
func (m *MaskDir) Options() maskgen.SPEOptions { return m.opt }

// encoder returns the encoder of image i, loading its label map when not held.
func (m *MaskDir) encoder(i int) (*maskEntry, error) {
	if i < 0 || i >= len(m.images) {
		return nil, fmt.Errorf("dataset: mask for image index %d of %d", i, len(m.images))
	}
	m.mu.Lock()
	m.tick++
	if e, ok := m.cache[i]; ok {
		e.lastUse = m.tick
		m.mu.Unlock()
		return e, nil
	}
	m.mu.Unlock()
	path := m.Path(i)
	lm, _, err := maskgen.ReadLabelMap(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: mask of image %s: %w", m.images[i].ID, err)
	}
	enc, err := maskgen.NewEncoder(lm, m.opt)
	if err != nil {
		return nil, fmt.Errorf("dataset: mask of image %s (%s): %w", m.images[i].ID, path, err)
	}
	e := &maskEntry{enc: enc, w: lm.Width, h: lm.Height}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick++
	e.lastUse = m.tick
	m.cache[i] = e
	for len(m.cache) > m.keep {
		oldest, ot := -1, ^uint64(0)
		for k, v := range m.cache {
			if v.lastUse < ot {
				oldest, ot = k, v.lastUse
			}
		}
		delete(m.cache, oldest)
	}
	return e, nil
}

// CheckSize reports an error when image i's label map is not w x h (the HR size)
// or its crop to a multiple of 4.
func (m *MaskDir) CheckSize(i, w, h int) error {
	e, err := m.encoder(i)
	if err != nil {
		return err
	}
	if (e.w == w && e.h == h) || (e.w == w-w%4 && e.h == h-h%4) {
		return nil
	}
	return fmt.Errorf("dataset: label map %s is %dx%d but image %s is %dx%d; delete it and re-run `samdiffsr masks`",
		m.Path(i), e.w, e.h, m.images[i].ID, w, h)
}

// PatchE implements MaskSource with maskgen's Encoder.PatchInWindow.
func (m *MaskDir) PatchE(t Tile, x, y, w, h int, dst []float32) error {
	e, err := m.encoder(t.Image)
	if err != nil {
		return err
	}
	if err := e.enc.PatchInWindow(t.X, t.Y, t.W, t.H, x, y, w, h, dst); err != nil {
		return fmt.Errorf("dataset: mask of image %s (%s): %w", m.images[t.Image].ID, m.Path(t.Image), err)
	}
	return nil
}

// TileE writes E of the whole tile t (t.W*t.H values). A patch cut from it equals
// PatchE of that patch, except for the reduce rule, which the caller applies to the
// patch (a patch whose E holds one value gets zeros; a tile that lies in a single
// region is already zero).
func (m *MaskDir) TileE(t Tile, dst []float32) error {
	return m.PatchE(t, t.X, t.Y, t.W, t.H, dst)
}
