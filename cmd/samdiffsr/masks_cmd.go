package main

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg"
	"image/png"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/internal/imagefile"
	"github.com/samdiffsr/samdiffsr/maskgen"
	"github.com/samdiffsr/samdiffsr/maskgen/samonnx"
	"github.com/samdiffsr/samdiffsr/worker"
)

// newMasksCmd is `samdiffsr masks`: a local mask farm, plus `show` (and `pull` for the
// distributed farm).
func newMasksCmd(a *app) *cobra.Command {
	var (
		data, out, segName string
		workers            int
	)
	cmd := &cobra.Command{
		Use:   "masks",
		Short: "Segment every HR image of a dataset into a label map (local mask farm)",
		Long: `masks finds the HR images under --data (DIV2K/Flickr2K layouts or a plain folder) and
writes one label map per image to --out: <ID>.png (16-bit grayscale, one region id per
pixel) and <ID>.json (segmenter, parameters, region count, SHA-256 of the image).
<ID> is the image's name without extension in a plain folder (0001), and <set>/<name>
in a DIV2K/Flickr2K layout (DIV2K_train/0001 -> OUT/DIV2K_train/0001.png).

Images are segmented --workers at a time. Writes are atomic, so a stopped run leaves no
half file, and a re-run skips every image whose label map is complete and was made from
the same image bytes with the same segmenter and parameters. An image that cannot be
read or decoded is reported by name and listed in <out>/failures.json; the others are
done, and the exit code is 1 when any image failed.

Defaults come from the config: masks.dir, masks.workers, masks.segmenter and
masks.builtin.{sigma,k,min_size}.`,
		Example: `  samdiffsr masks --data data/DF2K --out data/DF2K/masks --workers 2
  SAMDIFFSR_MASKS_BUILTIN_K=1200 samdiffsr masks --config configs/sam_diffsr_x4.yaml --data data/DF2K`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if data == "" {
				data = cfg.Data.Root
			}
			if out == "" {
				out = cfg.Masks.Dir
			}
			if data == "" {
				return &exitError{code: 2, msg: "masks: --data DIR is required (or set data.root)"}
			}
			if out == "" {
				return &exitError{code: 2, msg: "masks: --out DIR is required (or set masks.dir)"}
			}
			if !cmd.Flags().Changed("workers") {
				workers = cfg.Masks.Workers
			}
			if workers < 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("masks: --workers %d must be >= 0 (0 = number of CPUs)", workers)}
			}
			if workers == 0 {
				workers = runtime.GOMAXPROCS(0)
			}
			if !cmd.Flags().Changed("segmenter") {
				segName = cfg.Masks.Segmenter
			}
			newSeg, err := maskSegmenterFactory(segName, cfg.Masks, workers)
			if err != nil {
				return err
			}
			layout, err := dataset.Discover(data)
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			for _, p := range layout.Problems {
				a.log.Warn("dataset problem", "problem", p.String())
			}
			images := worker.MaskImagesFromLayout(layout)
			a.log.Info("masks", "images", len(images), "data", data, "out", out, "workers", workers, "segmenter", segName)
			rep, err := worker.RunLocalMaskFarm(cmd.Context(), worker.LocalFarmOptions{
				Images: images, Out: out, Workers: workers, NewSegmenter: newSeg, Log: a.log, ProgressOut: a.stderr,
				MaxPixels: cfg.Data.MaxPixels,
			})
			if rep != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "masks: %d done, %d skipped (up to date), %d failed of %d images in %s -> %s\n",
					rep.Done, rep.Skipped, rep.Failed, rep.Total, rep.Elapsed.Round(time.Millisecond), out)
			}
			if err != nil {
				return err
			}
			return maskFailuresError("masks", "fix or remove them", out, rep)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&data, "data", "", "dataset root: DIV2K/Flickr2K layout or a folder of HR images (default data.root)")
	fl.StringVar(&out, "out", "", "folder for the label maps (default masks.dir)")
	fl.IntVar(&workers, "workers", 0, "images segmented at once; 0 = number of CPUs (default masks.workers)")
	fl.StringVar(&segName, "segmenter", "", "segmenter: builtin or sam-onnx (default masks.segmenter)")
	cmd.AddCommand(newMasksShowCmd(a), newMasksPullCmd(a))
	cmd.AddCommand(newMasksImportCmd(a))
	return cmd
}

// maskSegmenterFactory returns a factory of segmenters for a pool of workers
// goroutines; the CPUs are shared between them (each built-in segmenter gets
// GOMAXPROCS/workers threads).
func maskSegmenterFactory(name string, m configs.Masks, workers int) (func() (maskgen.Segmenter, error), error) {
	switch name {
	case maskgen.BuiltinName:
		threads := max(1, runtime.GOMAXPROCS(0)/max(1, workers))
		if _, err := maskgen.NewBuiltinFromConfig(m.Builtin, threads); err != nil {
			return nil, &exitError{code: 2, msg: "masks: " + err.Error()}
		}
		return func() (maskgen.Segmenter, error) { return maskgen.NewBuiltinFromConfig(m.Builtin, threads) }, nil
	case samonnx.Name:
		// One Segmenter for the whole pool: Segment is safe for concurrent use and the
		// models load once; New fails here on a missing model file or library.
		seg, err := samonnx.New(m.SAM, samonnx.WithThreads(max(1, runtime.GOMAXPROCS(0)/max(1, workers))))
		if err != nil {
			return nil, &exitError{code: 2, msg: "masks: " + err.Error()}
		}
		return func() (maskgen.Segmenter, error) { return seg, nil }, nil
	default:
		return nil, &exitError{code: 2, msg: fmt.Sprintf("masks: --segmenter %q is not available; use builtin or sam-onnx", name)}
	}
}

// newMasksShowCmd is `samdiffsr masks show`: look at a label map before trusting it.
func newMasksShowCmd(a *app) *cobra.Command {
	var (
		imgPath, labels, out, mean string
		alpha                      float64
	)
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Draw an image's label map: region colours and boundaries over the image, beside a heat map of E",
		Long: `show writes a PNG with two panels: on the left the image with each region blended in
a random colour and the region boundaries in white; on the right a heat map of the
embedded mask E (METHOD §2) computed from the label map, blue for negative, red for
positive, white for zero (pixels in no region). The region values use masks.spe_mean
unless --spe-mean is given.`,
		Example: `  samdiffsr masks show --image data/DF2K/DIV2K_train_HR/0001.png --labels data/DF2K/masks/DIV2K_train/0001.png --out viz.png`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if imgPath == "" || labels == "" || out == "" {
				return &exitError{code: 2, msg: "masks show: --image, --labels and --out are required"}
			}
			if mean == "" {
				mean = cfg.Masks.SPEMean
			}
			if alpha < 0 || alpha > 1 {
				return &exitError{code: 2, msg: fmt.Sprintf("masks show: --alpha %v must be in [0, 1]", alpha)}
			}
			img, err := decodeImageFile(imgPath)
			if err != nil {
				return err
			}
			m, _, err := maskgen.ReadLabelMap(labels)
			if errors.Is(err, fs.ErrNotExist) {
				// A label map without its sidecar (copied alone) is still worth a look.
				if data, rerr := os.ReadFile(labels); rerr == nil {
					a.log.Warn("label map has no sidecar; reading the PNG alone", "labels", labels)
					m, err = maskgen.DecodeLabelMapPNG(data)
					if err != nil {
						err = fmt.Errorf("%s: %w", labels, err)
					}
				}
			}
			if err != nil {
				return err
			}
			b := img.Bounds()
			if b.Dx() != m.Width || b.Dy() != m.Height {
				return &exitError{code: 2, msg: fmt.Sprintf("masks show: image %s is %dx%d but label map %s is %dx%d; pass the label map made from this image",
					imgPath, b.Dx(), b.Dy(), labels, m.Width, m.Height)}
			}
			enc, err := maskgen.NewEncoder(m, maskgen.SPEOptions{Mean: mean})
			if err != nil {
				return &exitError{code: 2, msg: "masks show: " + err.Error()}
			}
			viz, lo, hi := renderMaskViz(img, m, enc, alpha)
			var buf bytes.Buffer
			if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, viz); err != nil {
				return fmt.Errorf("masks show: encode %s: %w", out, err)
			}
			if err := fsutil.WriteFileAtomic(out, buf.Bytes(), 0o644); err != nil {
				return fmt.Errorf("masks show: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %dx%d, %d regions, E (%s mean) in [%.4g, %.4g] -> %s\n",
				labels, m.Width, m.Height, m.Regions, mean, lo, hi, out)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&imgPath, "image", "", "the image (PNG or JPEG)")
	fl.StringVar(&labels, "labels", "", "its label map (16-bit PNG written by samdiffsr masks)")
	fl.StringVar(&out, "out", "", "output PNG")
	fl.StringVar(&mean, "spe-mean", "", "region values for the E panel: region or image (default masks.spe_mean)")
	fl.Float64Var(&alpha, "alpha", 0.45, "opacity of the region colours over the image")
	return cmd
}

// decodeImageFile decodes a PNG or JPEG file, with an error naming it.
func decodeImageFile(path string) (image.Image, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read image %s: %w", path, err)
	}
	img, _, err := imagefile.Decode(bytes.NewReader(data), path, 0)
	if err != nil {
		return nil, err
	}
	return img, nil
}

// regionColour is a fixed pseudo-random colour per region id (splitmix64 of the id).
func regionColour(l uint16) color.RGBA {
	z := uint64(l)*0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	z ^= z >> 31
	return color.RGBA{uint8(64 + z%192), uint8(64 + (z>>8)%192), uint8(64 + (z>>16)%192), 255}
}

// renderMaskViz draws the two panels side by side (8 px apart) and returns E's range.
func renderMaskViz(img image.Image, m *maskgen.LabelMap, enc *maskgen.Encoder, alpha float64) (*image.RGBA, float32, float32) {
	W, H := m.Width, m.Height
	const gap = 8
	out := image.NewRGBA(image.Rect(0, 0, 2*W+gap, H))
	for i := range out.Pix {
		out.Pix[i] = 255
	}
	b := img.Bounds()
	for y := 0; y < H; y++ {
		for x := 0; x < W; x++ {
			r, g, bl, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			c := [3]float64{float64(r >> 8), float64(g >> 8), float64(bl >> 8)}
			l := m.At(x, y)
			o := out.PixOffset(x, y)
			edge := (x+1 < W && m.At(x+1, y) != l) || (y+1 < H && m.At(x, y+1) != l) ||
				(x > 0 && m.At(x-1, y) != l) || (y > 0 && m.At(x, y-1) != l)
			switch {
			case edge:
				out.Pix[o], out.Pix[o+1], out.Pix[o+2] = 255, 255, 255
			case l != 0:
				rc := regionColour(l)
				for ch, v := range [3]uint8{rc.R, rc.G, rc.B} {
					out.Pix[o+ch] = uint8(math.Round((1-alpha)*c[ch] + alpha*float64(v)))
				}
			default:
				out.Pix[o], out.Pix[o+1], out.Pix[o+2] = uint8(c[0]), uint8(c[1]), uint8(c[2])
			}
		}
	}
	e := make([]float32, W*H)
	enc.Full(e)
	lo, hi := float32(0), float32(0)
	for _, v := range e {
		lo, hi = min(lo, v), max(hi, v)
	}
	scale := max(-lo, hi)
	for y := 0; y < H; y++ {
		for x := 0; x < W; x++ {
			t := 0.0
			if scale > 0 {
				t = float64(e[y*W+x] / scale) // in [-1, 1]
			}
			// Diverging map: blue (-1), white (0), red (+1).
			r, g, bl := 1.0, 1.0, 1.0
			if t > 0 {
				g, bl = 1-t, 1-t
			} else {
				r, g = 1+t, 1+t
			}
			o := out.PixOffset(W+gap+x, y)
			out.Pix[o], out.Pix[o+1], out.Pix[o+2] = uint8(255*r), uint8(255*g), uint8(255*bl)
		}
	}
	return out, lo, hi
}

// maskFailuresError is the exit-1 error of a mask run with failed images (nil
// when none failed): how many, where they are listed, each with why, and the fix.
func maskFailuresError(cmd, fix, out string, rep *worker.FarmReport) error {
	if rep.Failed == 0 {
		return nil
	}
	msg := fmt.Sprintf("%s: %d of %d images failed (listed in %s); %s and run again", cmd, rep.Failed, rep.Total,
		filepath.Join(out, worker.FailuresFile), fix)
	for _, f := range rep.Failures {
		msg += "\n  " + f.ID + ": " + f.Error
	}
	return &exitError{code: 1, msg: msg}
}
