package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/imagefile"
	"github.com/samdiffsr/samdiffsr/maskgen"
	"github.com/samdiffsr/samdiffsr/worker"
)

// maxSAMJSONBytes bounds a SAM JSON file; a larger one is reported as a failed image
// (as is an image whose header claims more than data.max_pixels).
const maxSAMJSONBytes = 1 << 30

// newMasksImportCmd is `samdiffsr masks import`: label maps from masks made elsewhere
// (SAM's scripts/amg.py JSON files).
func newMasksImportCmd(a *app) *cobra.Command {
	var (
		from, data, out string
		workers         int
	)
	cmd := &cobra.Command{
		Use:   "import --from sam-json DIR",
		Short: "Turn SAM's own mask files (amg.py --convert-to-rle JSON) into label maps",
		Long: `import reads the masks SAM's scripts/amg.py wrote with --convert-to-rle (one JSON file
per image, a list of annotations with a COCO RLE segmentation and a predicted_iou; the
reference's released mask set is in this form) and writes the usual label maps to --out:
<ID>.png and <ID>.json for every HR image under --data, exactly as the built-in SAM
generator paints them (masks in descending predicted IoU, later ones overwriting earlier
ones, 0 where no mask is).

The JSON file of image ID is DIR/ID.json or, as amg.py names them, DIR/<file name of
the image without extension>.json. Every mask must have the image's size. A re-run
skips every image whose label map was made from the same image and JSON bytes; an
image without a usable JSON file is reported by name and listed in <out>/failures.json,
the others are done, and the exit code is 1 when any image failed.`,
		Example: `  samdiffsr masks import --from sam-json data/sam_out/DF2K/DF2K_train_HR --data data/DF2K --out data/DF2K/masks`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from != "sam-json" {
				return &exitError{code: 2, msg: fmt.Sprintf("masks import: --from %q is not a known mask format; use --from sam-json", from)}
			}
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
			if data == "" || out == "" {
				return &exitError{code: 2, msg: "masks import: --data DIR and --out DIR are required (or set data.root and masks.dir)"}
			}
			if workers < 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("masks import: --workers %d must be >= 0 (0 = number of CPUs)", workers)}
			}
			if workers == 0 {
				workers = runtime.GOMAXPROCS(0)
			}
			if pathWithin(out, args[0]) {
				return &exitError{code: 2, msg: fmt.Sprintf("masks import: --out %s is inside the SAM JSON folder %s (label-map sidecars are .json files too); choose another --out", out, args[0])}
			}
			idx, err := indexSAMJSON(args[0])
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			layout, err := dataset.Discover(data)
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			for _, p := range layout.Problems {
				a.log.Warn("dataset problem", "problem", p.String())
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return fmt.Errorf("masks import: create %s: %w (check permissions or choose another --out)", out, err)
			}
			images := worker.MaskImagesFromLayout(layout)
			a.log.Info("masks import", "images", len(images), "json_files", len(idx.byRel), "from", args[0], "out", out)
			rep, err := importSAMMasks(cmd.Context(), images, idx, out, workers, cfg.Data.MaxPixels)
			if rep != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "masks import: %d done, %d skipped (up to date), %d failed of %d images -> %s\n",
					rep.Done, rep.Skipped, rep.Failed, rep.Total, out)
			}
			if err != nil {
				return err
			}
			if err := worker.WriteFailures(out, rep.Failures); err != nil {
				a.log.Error("could not write the failure list", "err", err)
			}
			return maskFailuresError("masks import", "fix their JSON files", out, rep)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from, "from", "", "format of the masks in DIR: sam-json (SAM amg.py --convert-to-rle output)")
	fl.StringVar(&data, "data", "", "dataset root: DIV2K/Flickr2K layout or a folder of HR images (default data.root)")
	fl.StringVar(&out, "out", "", "folder for the label maps (default masks.dir)")
	fl.IntVar(&workers, "workers", 0, "images imported at once; 0 = number of CPUs")
	return cmd
}

// samJSONIndex finds the JSON file of an image: by relative path (ID) or by file name.
type samJSONIndex struct {
	dir    string
	byRel  map[string]string   // "DIV2K_train/0001" -> file
	byBase map[string][]string // "0001" -> files
}

// indexSAMJSON lists the *.json files under dir.
func indexSAMJSON(dir string) (*samJSONIndex, error) {
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return nil, fmt.Errorf("masks import: %s is not a folder of SAM JSON files (%v)", dir, err)
	}
	idx := &samJSONIndex{dir: dir, byRel: map[string]string{}, byBase: map[string][]string{}}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.EqualFold(filepath.Ext(p), ".json") || d.Name() == worker.FailuresFile {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		key := strings.TrimSuffix(filepath.ToSlash(rel), filepath.Ext(rel))
		idx.byRel[key] = p
		base := path.Base(key)
		idx.byBase[base] = append(idx.byBase[base], p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("masks import: list %s: %w", dir, err)
	}
	if len(idx.byRel) == 0 {
		return nil, fmt.Errorf("masks import: no .json files under %s (amg.py writes one per image with --convert-to-rle)", dir)
	}
	return idx, nil
}

// find returns the JSON file of im.
func (x *samJSONIndex) find(im worker.MaskImage) (string, error) {
	if p, ok := x.byRel[im.ID]; ok {
		return p, nil
	}
	base := strings.TrimSuffix(filepath.Base(im.Path), filepath.Ext(im.Path))
	switch c := x.byBase[base]; len(c) {
	case 1:
		return c[0], nil
	case 0:
		return "", fmt.Errorf("no SAM JSON file for image %s (looked for %s and %s)", im.Path,
			filepath.Join(x.dir, filepath.FromSlash(im.ID)+".json"), filepath.Join(x.dir, base+".json"))
	default:
		return "", fmt.Errorf("%d SAM JSON files are named %s.json (%s); put them in folders named like the image IDs (%s.json)",
			len(c), base, strings.Join(c, ", "), im.ID)
	}
}

// importSAMMasks imports every image, workers at a time. An image problem is a
// failure of that image; an unwritable output folder stops the run.
func importSAMMasks(ctx context.Context, images []worker.MaskImage, idx *samJSONIndex, out string, workers int, maxPixels int64) (*worker.FarmReport, error) {
	rep := &worker.FarmReport{Total: len(images)}
	var (
		mu    sync.Mutex
		fatal error
		wg    sync.WaitGroup
		jobs  = make(chan worker.MaskImage)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < max(1, min(workers, len(images))); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for im := range jobs {
				what, err := importOne(im, idx, out, maxPixels)
				mu.Lock()
				switch {
				case what == "" && err != nil:
					if fatal == nil {
						fatal = err
					}
					cancel()
				case what == worker.MaskFailed:
					rep.Failed++
					rep.Failures = append(rep.Failures, worker.MaskFailure{ID: im.ID, Path: im.Path, Error: err.Error()})
				case what == worker.MaskSkipped:
					rep.Skipped++
				default:
					rep.Done++
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, im := range images {
		select {
		case jobs <- im:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	sort.Slice(rep.Failures, func(i, j int) bool { return rep.Failures[i].ID < rep.Failures[j].ID })
	if fatal != nil {
		return rep, fatal
	}
	return rep, ctx.Err()
}

// importOne imports one image: its outcome, or "" with an error when the output could
// not be written. The image's size comes from its header (no more than maxPixels).
func importOne(im worker.MaskImage, idx *samJSONIndex, out string, maxPixels int64) (string, error) {
	jsonPath, err := idx.find(im)
	if err != nil {
		return worker.MaskFailed, err
	}
	imgData, err := os.ReadFile(im.Path)
	if err != nil {
		return worker.MaskFailed, fmt.Errorf("read image %s: %w", im.Path, err)
	}
	js, err := readLimited(jsonPath, maxSAMJSONBytes)
	if err != nil {
		return worker.MaskFailed, err
	}
	imgSum, jsSum := maskgen.SHA256Hex(imgData), maskgen.SHA256Hex(js)
	dst := dataset.MaskPath(out, im.ID)
	if importUpToDate(dst, imgSum, jsSum) {
		return worker.MaskSkipped, nil
	}
	ic, _, err := imagefile.Config(bytes.NewReader(imgData), im.Path, maxPixels)
	if err != nil {
		return worker.MaskFailed, err
	}
	anns, err := maskgen.ParseSAMJSON(js)
	if err != nil {
		return worker.MaskFailed, fmt.Errorf("%s: %w", jsonPath, err)
	}
	lm, err := maskgen.PaintSAMAnnotations(anns, ic.Width, ic.Height)
	if err != nil {
		return worker.MaskFailed, fmt.Errorf("%s (image %s): %w", jsonPath, im.Path, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fmt.Errorf("masks import: %w", err)
	}
	sc := &maskgen.Sidecar{Segmenter: maskgen.SAMJSONName, Source: im.ID, SourceSHA256: imgSum,
		Params: map[string]any{"json_sha256": jsSum, "json": filepath.Base(jsonPath), "order": "predicted_iou descending, later overwrites"}}
	if err := maskgen.WriteLabelMap(dst, lm, sc); err != nil {
		return "", fmt.Errorf("masks import: image %s: %w", im.ID, err)
	}
	return worker.MaskDone, nil
}

// importUpToDate reports whether the label map at dst is complete and was imported
// from the same image and JSON bytes.
func importUpToDate(dst, imgSum, jsSum string) bool {
	sc, err := maskgen.ReadSidecar(dst)
	if err != nil || sc.Segmenter != maskgen.SAMJSONName || sc.SourceSHA256 != imgSum || sc.Params["json_sha256"] != jsSum {
		return false
	}
	data, err := os.ReadFile(dst)
	return err == nil && sc.LabelsSHA256 == maskgen.SHA256Hex(data)
}

// pathWithin reports whether folder p is dir or lies under it.
func pathWithin(p, dir string) bool {
	ap, err1 := filepath.Abs(p)
	ad, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(ad, ap)
	return err == nil && (rel == "." || !strings.HasPrefix(rel, ".."))
}

// readLimited reads a file of at most limit bytes.
func readLimited(p string, limit int64) ([]byte, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d a mask file may have", p, st.Size(), limit)
	}
	return os.ReadFile(p)
}
