package dataset

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

// badImage is an image PackShards skips: the problem names the file and the fix.
type badImage struct{ p Problem }

func (b badImage) Error() string { return b.p.String() }

func bad(path, format string, args ...any) badImage {
	return badImage{Problem{Path: path, Msg: fmt.Sprintf(format, args...)}}
}

// packImage is one image decoded for a shard: its entry and its tiles' sections.
type packImage struct {
	src      ShardSource
	srcBytes int64
	entry    ShardImage
	tiles    []Tile
	data     []tileData
}

// readSource reads a source file and records its digest in *sum.
func readSource(path string, sum *string, total *int64) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	d := sha256.Sum256(b)
	*sum = hex.EncodeToString(d[:])
	*total += int64(len(b))
	return b, nil
}

// loadPackImage decodes a planned image, makes or reads its LR and cuts its tiles
// (with their labels when o.MasksDir is set). A bad file is a badImage error; the
// source digests read so far are returned with any error.
func loadPackImage(pi plannedImage, o PackOptions) (*packImage, error) {
	im := pi.img
	p := &packImage{src: ShardSource{ID: im.ID}}
	b, err := readSource(im.HRPath, &p.src.HR, &p.srcBytes)
	if err != nil {
		return p, bad(im.HRPath, "unreadable HR image: %v", err)
	}
	full, err := DecodeRGB(bytes.NewReader(b), im.HRPath)
	if err != nil {
		return p, bad(im.HRPath, "unreadable HR image: %v", err)
	}
	if full.W != pi.w || full.H != pi.h {
		return p, bad(im.HRPath, "HR image decodes to %dx%d but its header says %dx%d; replace the file", full.W, full.H, pi.w, pi.h)
	}
	hr := full.CropMultiple(4)
	p.tiles = TileGrid(0, hr.W, hr.H, o.TileSize, o.TileThreshold)
	p.entry = ShardImage{ID: im.ID, W: hr.W, H: hr.H}
	var lr *RGB
	if im.LRPath != "" {
		lb, err := readSource(im.LRPath, &p.src.LR, &p.srcBytes)
		if err != nil {
			return p, bad(im.LRPath, "unreadable LR image: %v", err)
		}
		if lr, err = DecodeRGB(bytes.NewReader(lb), im.LRPath); err != nil {
			return p, bad(im.LRPath, "unreadable LR image: %v", err)
		}
		if lr.W != hr.W/4 || lr.H != hr.H/4 {
			return p, bad(im.LRPath, "LR image is %dx%d but its HR %s is %dx%d (%dx%d once cropped to a multiple of 4), so the LR must be %dx%d; replace it or delete it to have the LR generated",
				lr.W, lr.H, im.HRPath, full.W, full.H, hr.W, hr.H, hr.W/4, hr.H/4)
		}
	} else if lr, err = Imresize(hr, 0.25); err != nil {
		return p, bad(im.HRPath, "making the LR: %v", err)
	}
	var labels []maskgen.TileLabels
	if o.MasksDir != "" {
		if labels, err = p.loadLabels(im, o.MasksDir, full); err != nil {
			return p, err
		}
	}
	p.data = make([]tileData, len(p.tiles))
	for k, t := range p.tiles {
		p.data[k] = tileData{hr: hr.Crop(t.X, t.Y, t.W, t.H).Pix, lr: lr.Crop(t.X/4, t.Y/4, t.W/4, t.H/4).Pix}
		if labels != nil {
			p.data[k].labels = &labels[k]
		}
	}
	return p, nil
}

// loadLabels reads the image's label map, records its region values for both SPE
// means and cuts the labels of every tile.
func (p *packImage) loadLabels(im Image, dir string, full *RGB) ([]maskgen.TileLabels, error) {
	path := MaskPath(dir, im.ID)
	if _, err := readSource(path, &p.src.Labels, &p.srcBytes); err != nil {
		return nil, bad(path, "unreadable label map: %v; re-run `samdiffsr masks` for %s", err, im.ID)
	}
	lm, _, err := maskgen.ReadLabelMap(path)
	if err != nil {
		return nil, bad(path, "%v", err)
	}
	w, h := full.W, full.H
	if (lm.Width != w || lm.Height != h) && (lm.Width != w-w%4 || lm.Height != h-h%4) {
		return nil, bad(path, "label map is %dx%d but image %s is %dx%d; delete it and re-run `samdiffsr masks`", lm.Width, lm.Height, im.ID, w, h)
	}
	region, err := maskgen.NewEncoder(lm, maskgen.SPEOptions{Mean: maskgen.MeanRegion})
	if err != nil {
		return nil, bad(path, "%v", err)
	}
	image, err := maskgen.NewEncoder(lm, maskgen.SPEOptions{Mean: maskgen.MeanImage})
	if err != nil {
		return nil, bad(path, "%v", err)
	}
	p.entry.RegionValues, p.entry.ImageValues = region.Values(), image.Values()
	out := make([]maskgen.TileLabels, len(p.tiles))
	for k, t := range p.tiles {
		if out[k], err = region.TileLabels(t.X, t.Y, t.W, t.H); err != nil {
			return nil, bad(path, "%v", err)
		}
	}
	return out, nil
}

// write appends the image and its tiles to a shard.
func (p *packImage) write(sw *shardWriter) error {
	img := len(sw.idx.Images)
	sw.idx.Images = append(sw.idx.Images, p.entry)
	for k, t := range p.tiles {
		if err := sw.addTile(ShardTile{Image: img, X: t.X, Y: t.Y, W: t.W, H: t.H}, p.data[k]); err != nil {
			return err
		}
	}
	return nil
}
