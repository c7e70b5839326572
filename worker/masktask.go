package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/internal/imagefile"
	"github.com/samdiffsr/samdiffsr/internal/progress"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// MaskResult is the outcome of one mask task: the encoded label map of one image and
// its sidecar, ready to be written to a folder or put in an object store.
type MaskResult struct {
	// ImageID is the image's dataset ID (label maps are named after it).
	ImageID string
	// SHA256 is the hex SHA-256 of the image file's bytes as read.
	SHA256 string
	// Regions is the number of regions in the label map.
	Regions int
	// PNG is the 16-bit grayscale label-map PNG.
	PNG []byte
	// Sidecar is the label map's JSON sidecar (maskgen.Sidecar).
	Sidecar []byte
}

// ProcessMaskImage is one mask task: read the image at path, hash its bytes, decode
// it (PNG or JPEG), segment it with seg and encode the label map and its sidecar.
// The result is a deterministic function of the file's bytes and seg's parameters.
func ProcessMaskImage(ctx context.Context, seg maskgen.Segmenter, imageID, path string) (*MaskResult, error) {
	return ProcessMaskImageMax(ctx, seg, imageID, path, 0)
}

// ProcessMaskImageMax is ProcessMaskImage with a pixel limit (data.max_pixels;
// <= 0: imagefile.DefaultMaxPixels), checked from the header before decoding.
func ProcessMaskImageMax(ctx context.Context, seg maskgen.Segmenter, imageID, path string, maxPixels int64) (*MaskResult, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("worker: read image %s: %w (check the path and permissions)", path, err)
	}
	return processMaskBytes(ctx, seg, imageID, path, data, maskgen.SHA256Hex(data), maxPixels)
}

// processMaskBytes is ProcessMaskImage for an image already read (sum = its SHA-256),
// refusing images over maxPixels (<= 0: imagefile.DefaultMaxPixels) from the header.
func processMaskBytes(ctx context.Context, seg maskgen.Segmenter, imageID, path string, data []byte, sum string, maxPixels int64) (*MaskResult, error) {
	img, _, err := imagefile.Decode(bytes.NewReader(data), path, maxPixels)
	if err != nil {
		return nil, fmt.Errorf("worker: mask task: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	lm, err := seg.Segment(ctx, img)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("worker: segment image %s: %w", path, err)
	}
	pngData, err := maskgen.EncodeLabelMapPNG(lm)
	if err != nil {
		return nil, fmt.Errorf("worker: label map of %s: %w", path, err)
	}
	sc := &maskgen.Sidecar{
		Format:       maskgen.SidecarFormat,
		Segmenter:    seg.Name(),
		Params:       seg.Params(),
		Regions:      lm.Regions,
		Width:        lm.Width,
		Height:       lm.Height,
		Source:       imageID,
		SourceSHA256: sum,
		LabelsSHA256: maskgen.SHA256Hex(pngData),
	}
	scData, err := maskgen.MarshalSidecar(sc)
	if err != nil {
		return nil, fmt.Errorf("worker: sidecar of %s: %w", path, err)
	}
	return &MaskResult{ImageID: imageID, SHA256: sum, Regions: lm.Regions, PNG: pngData, Sidecar: scData}, nil
}

// MaskImage is one image of a local mask farm.
type MaskImage struct {
	// ID names the label map: <out>/<ID>.png (IDs may contain '/').
	ID string
	// Path is the image file.
	Path string
}

// MaskImagesFromLayout lists every HR image of a discovered dataset (training and
// validation sets alike, as the reference's mask set does).
func MaskImagesFromLayout(l *dataset.Layout) []MaskImage {
	out := make([]MaskImage, len(l.Images))
	for i, im := range l.Images {
		out[i] = MaskImage{ID: im.ID, Path: im.HRPath}
	}
	return out
}

// Mask task outcomes reported to LocalFarmOptions.OnImage.
const (
	MaskDone    = "done"
	MaskSkipped = "skipped"
	MaskFailed  = "failed"
)

// FailuresFile is the name of the file, in the output folder, listing the images a
// local mask farm could not process.
const FailuresFile = "failures.json"

// LocalFarmOptions configure RunLocalMaskFarm.
type LocalFarmOptions struct {
	// Images are the images to segment.
	Images []MaskImage
	// Out is the folder label maps are written to (<Out>/<ID>.png and .json).
	Out string
	// Workers is how many images are segmented at once (0: GOMAXPROCS).
	Workers int
	// NewSegmenter makes one Segmenter per worker goroutine.
	NewSegmenter func() (maskgen.Segmenter, error)
	// Log receives log lines (default slog.Default()).
	Log *slog.Logger
	// ProgressOut is where the progress bar is drawn when it is a terminal (default
	// os.Stderr); otherwise progress goes to Log as plain lines.
	ProgressOut io.Writer
	// OnImage, when set, is called after each image with its outcome (MaskDone,
	// MaskSkipped or MaskFailed), from the worker goroutines.
	OnImage func(id, outcome string)
	// MaxPixels refuses, from the header alone, images claiming more pixels
	// (data.max_pixels; <= 0: imagefile.DefaultMaxPixels).
	MaxPixels int64
}

// MaskFailure is one image a farm could not process.
type MaskFailure struct {
	ID    string `json:"id"`
	Path  string `json:"path"`
	Error string `json:"error"`
}

// FarmReport summarises a local mask-farm run.
type FarmReport struct {
	// Total is the number of images; Done were segmented and written by this run,
	// Skipped already had an up-to-date label map, Failed could not be processed.
	// Images not counted in any of them were not reached (the run was cancelled).
	Total, Done, Skipped, Failed int
	// Failures lists the failed images, sorted by ID.
	Failures []MaskFailure
	// Elapsed is the run's wall-clock time.
	Elapsed time.Duration
}

// RunLocalMaskFarm segments every image of opts.Images that has no up-to-date label
// map in opts.Out, with opts.Workers goroutines, each with its own Segmenter.
//
// A label map is up to date, and its image skipped, when its PNG and sidecar exist,
// agree (PNG checksum), and the sidecar names the image file's SHA-256 and the same
// segmenter and parameters. Files are written atomically (PNG, then the sidecar that
// marks completion), so a run that is cancelled or killed leaves no partial label map
// and a re-run does each remaining image once. Stale temporary files of a killed run
// are removed at start: run one local farm per output folder at a time.
//
// An image that cannot be read, decoded or segmented is logged by name, listed in
// <Out>/failures.json and the report, and the others go on; failures.json is removed
// by a complete run without failures. The error is non-nil only when the run could not
// proceed (no segmenter, unwritable output) or ctx was cancelled (ctx.Err(), with the
// report so far).
func RunLocalMaskFarm(ctx context.Context, opts LocalFarmOptions) (*FarmReport, error) {
	start := time.Now()
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if opts.NewSegmenter == nil {
		return nil, errors.New("worker: local mask farm: no segmenter factory")
	}
	if opts.Out == "" {
		return nil, errors.New("worker: local mask farm: no output folder (set --out or masks.dir)")
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("worker: create mask folder %s: %w (check permissions or choose another --out)", opts.Out, err)
	}
	if err := checkUniqueIDs(opts.Images); err != nil {
		return nil, err
	}
	if n := removeStaleTemps(opts.Out); n > 0 {
		log.Info("removed temporary files of an interrupted run", "dir", opts.Out, "files", n)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = max(1, min(workers, len(opts.Images)))
	segs := make([]maskgen.Segmenter, workers)
	for i := range segs {
		s, err := opts.NewSegmenter()
		if err != nil {
			return nil, fmt.Errorf("worker: local mask farm: %w", err)
		}
		segs[i] = s
	}
	rep := &FarmReport{Total: len(opts.Images)}
	bar := progress.New(progress.Options{Label: "masks", Unit: "images", Total: int64(len(opts.Images)), Out: opts.ProgressOut, Log: log})

	var (
		mu       sync.Mutex
		fatal    error
		jobs     = make(chan MaskImage)
		wg       sync.WaitGroup
		runCtx   context.Context
		stopRun  context.CancelFunc
		outcome  = opts.OnImage
		failures []MaskFailure
	)
	runCtx, stopRun = context.WithCancel(ctx)
	defer stopRun()
	record := func(im MaskImage, what string, err error) {
		mu.Lock()
		switch what {
		case MaskDone:
			rep.Done++
		case MaskSkipped:
			rep.Skipped++
		case MaskFailed:
			rep.Failed++
			failures = append(failures, MaskFailure{ID: im.ID, Path: im.Path, Error: err.Error()})
			bar.SetExtra(fmt.Sprintf("failed %d", rep.Failed))
		}
		mu.Unlock()
		bar.Add(1)
		if outcome != nil {
			outcome(im.ID, what)
		}
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(seg maskgen.Segmenter) {
			defer wg.Done()
			for im := range jobs {
				what, err := maskOne(runCtx, seg, im, opts.Out, opts.MaxPixels)
				if runCtx.Err() != nil && what != MaskDone && what != MaskSkipped {
					continue // cancelled: not an image problem
				}
				if err != nil && what == "" {
					// Writing failed: the output folder is unusable; stop the run.
					mu.Lock()
					if fatal == nil {
						fatal = err
					}
					mu.Unlock()
					stopRun()
					continue
				}
				if what == MaskFailed {
					log.Error("mask task failed", "image", im.ID, "path", im.Path, "err", err)
				}
				record(im, what, err)
			}
		}(segs[w])
	}
feed:
	for _, im := range opts.Images {
		select {
		case jobs <- im:
		case <-runCtx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	bar.Done()
	rep.Elapsed = time.Since(start)
	sort.Slice(failures, func(i, j int) bool { return failures[i].ID < failures[j].ID })
	rep.Failures = failures

	// An interrupted run with no failures keeps an earlier list: it may be unfinished.
	if len(failures) > 0 || (fatal == nil && ctx.Err() == nil) {
		if err := WriteFailures(opts.Out, failures); err != nil {
			log.Error("could not write the failure list", "err", err)
		}
	}
	log.Info("masks finished", "total", rep.Total, "done", rep.Done, "skipped", rep.Skipped, "failed", rep.Failed,
		"elapsed", rep.Elapsed.Round(time.Millisecond), "out", opts.Out)
	if fatal != nil {
		return rep, fatal
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	return rep, nil
}

// maskOne does one image of a local farm. It returns the outcome, or "" with an error
// when the output could not be written (a problem of the folder, not of the image).
func maskOne(ctx context.Context, seg maskgen.Segmenter, im MaskImage, out string, maxPixels int64) (string, error) {
	data, err := os.ReadFile(im.Path)
	if err != nil {
		return MaskFailed, fmt.Errorf("worker: read image %s: %w (check the path and permissions)", im.Path, err)
	}
	sum := maskgen.SHA256Hex(data)
	path := dataset.MaskPath(out, im.ID)
	if upToDate(path, sum, seg) {
		return MaskSkipped, nil
	}
	res, err := processMaskBytes(ctx, seg, im.ID, im.Path, data, sum, maxPixels)
	if err != nil {
		return MaskFailed, err
	}
	if err := maskgen.WriteLabelMapFiles(path, res.PNG, res.Sidecar); err != nil {
		return "", fmt.Errorf("worker: image %s: %w", im.ID, err)
	}
	return MaskDone, nil
}

// upToDate reports whether the label map at path is complete and was made from an
// image with SHA-256 sum by a segmenter with seg's name and parameters.
func upToDate(path, sum string, seg maskgen.Segmenter) bool {
	sc, err := maskgen.ReadSidecar(path)
	if err != nil || sc.SourceSHA256 != sum || sc.Segmenter != seg.Name() || !sameParams(sc.Params, seg.Params()) {
		return false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	return sc.LabelsSHA256 == "" || sc.LabelsSHA256 == maskgen.SHA256Hex(data)
}

// sameParams compares parameter maps as their JSON encodings (a sidecar's numbers come
// back from JSON as float64).
func sameParams(a, b map[string]any) bool {
	norm := func(m map[string]any) string {
		js, err := json.Marshal(m)
		if err != nil {
			return "!"
		}
		var back map[string]any
		if json.Unmarshal(js, &back) != nil {
			return "!"
		}
		js, _ = json.Marshal(back)
		return string(js)
	}
	return norm(a) == norm(b)
}

// checkUniqueIDs rejects image lists where two images would write the same label map.
func checkUniqueIDs(images []MaskImage) error {
	seen := make(map[string]string, len(images))
	for _, im := range images {
		if im.ID == "" {
			return fmt.Errorf("worker: image %s has an empty ID", im.Path)
		}
		if prev, ok := seen[im.ID]; ok {
			return fmt.Errorf("worker: images %s and %s have the same ID %q and would share a label map; rename one", prev, im.Path, im.ID)
		}
		seen[im.ID] = im.Path
	}
	return nil
}

// removeStaleTemps deletes the temporary files fsutil.WriteFileAtomic leaves behind
// when a process is killed mid-write (".<name>.png.tmp-*", ".<name>.json.tmp-*")
// under dir, and returns how many it removed.
func removeStaleTemps(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		name := d.Name()
		if strings.HasPrefix(name, ".") && (strings.Contains(name, ".png.tmp-") || strings.Contains(name, ".json.tmp-")) {
			if os.Remove(p) == nil {
				n++
			}
		}
		return nil
	})
	return n
}

// WriteFailures writes failures to out/FailuresFile (atomically), or removes an
// old list when there are none.
func WriteFailures(out string, failures []MaskFailure) error {
	p := filepath.Join(out, FailuresFile)
	if len(failures) == 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("worker: remove the old failure list %s: %w", p, err)
		}
		return nil
	}
	js, err := json.MarshalIndent(failures, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(p, append(js, '\n'), 0o644)
}
