//go:build cgo

package samonnx

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// Decoder input and output names of SAM's scripts/export_onnx_model.py.
var (
	decoderInputs  = []string{"image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"}
	decoderOutputs = []string{"iou_predictions", "low_res_masks"}
)

// Segmenter is SAM's automatic mask generator over the two-model ONNX export, run
// with ONNX Runtime. Its sessions are created once and reused for every image.
// Each Segment call uses WithThreads goroutines (decoder batches run concurrently,
// one ONNX Runtime thread each). Segment is safe for concurrent use, so pools can
// share one Segmenter (and one copy of the model weights) instead of loading the
// models once per goroutine; concurrent calls each use WithThreads goroutines.
type Segmenter struct {
	cfg      configs.SAM
	gen      genParams
	threads  int
	version  string
	log      *slog.Logger
	enc      *ort.DynamicAdvancedSession
	dec      *ort.DynamicAdvancedSession
	decBatch int // prompts per decoder run: 1 for SAM's standard export
	nm       int // masks per prompt the decoder returns (4 for SAM's export)
	params   map[string]any

	mu    sync.Mutex // guards frame
	frame *frame     // upscaling geometry of the last image size

	// onDecode, when set (tests), sees every prompt's decoder outputs: the prompt's
	// grid index and 1024-frame coordinates, its predicted IoUs and low-res logits
	// (masks x 256 x 256). It may be called from several goroutines at once.
	onDecode func(point int, xy [2]float32, iou, low []float32)
	// times, when set (benchmarks), accumulates the time spent in each phase.
	times *phaseTimes
}

// Option adjusts a Segmenter beyond the config.
type Option func(*Segmenter)

// WithThreads sets how many decoder runs (and painting goroutines) proceed at once,
// and the encoder's intra-op threads. Default: GOMAXPROCS.
func WithThreads(n int) Option { return func(s *Segmenter) { s.threads = max(1, n) } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Segmenter) { s.log = l } }

// New loads the ONNX Runtime library (masks.sam.library, else $ONNXRUNTIME_LIB) and
// the encoder and decoder models (masks.sam.encoder, masks.sam.decoder), checks
// their inputs and outputs, and returns a ready Segmenter. Everything that can be
// checked before the first image is checked here: a missing model file or library
// is an error naming the config key, the path and the fix.
func New(cfg configs.SAM, opts ...Option) (*Segmenter, error) {
	gen, err := paramsFromConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &Segmenter{cfg: cfg, gen: gen, threads: runtime.GOMAXPROCS(0), log: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	if err := checkModelFile("masks.sam.encoder", cfg.Encoder); err != nil {
		return nil, err
	}
	if err := checkModelFile("masks.sam.decoder", cfg.Decoder); err != nil {
		return nil, err
	}
	lib, err := ResolveLibrary(cfg.Library)
	if err != nil {
		return nil, err
	}
	if s.version, err = initRuntime(lib); err != nil {
		return nil, err
	}
	if err := s.openEncoder(); err != nil {
		return nil, err
	}
	if err := s.openDecoder(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.probeDecoder(); err != nil {
		s.Close()
		return nil, err
	}
	s.params = s.describe()
	s.log.Info("sam-onnx ready", "encoder", cfg.Encoder, "decoder", cfg.Decoder, "onnxruntime", s.version,
		"library", lib, "decoder_batch", s.decBatch, "threads", s.threads)
	return s, nil
}

func checkModelFile(key, path string) error {
	if path == "" {
		return fmt.Errorf("samonnx: %s is empty: set it to the path of the SAM ONNX file (see README, \"SAM through ONNX Runtime\")", key)
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("samonnx: %s: model file %s: %w (fix the path, or export the model: README, \"SAM through ONNX Runtime\")", key, path, err)
	}
	if st.IsDir() {
		return fmt.Errorf("samonnx: %s: %s is a directory, not an ONNX file", key, path)
	}
	return nil
}

// dimsMatch reports whether a model's declared dims (−1 or symbolic: any) fit want.
func dimsMatch(have ort.Shape, want []int64) bool {
	if len(have) != len(want) {
		return false
	}
	for i, d := range have {
		if d >= 0 && d != want[i] {
			return false
		}
	}
	return true
}

func findInfo(infos []ort.InputOutputInfo, name string) (ort.InputOutputInfo, bool) {
	for _, in := range infos {
		if in.Name == name {
			return in, true
		}
	}
	return ort.InputOutputInfo{}, false
}

func (s *Segmenter) sessionOptions(intra int) (*ort.SessionOptions, error) {
	o, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	if err := o.SetIntraOpNumThreads(intra); err != nil {
		o.Destroy()
		return nil, err
	}
	if err := o.SetInterOpNumThreads(1); err != nil {
		o.Destroy()
		return nil, err
	}
	return o, nil
}

func (s *Segmenter) openEncoder() error {
	path := s.cfg.Encoder
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return fmt.Errorf("samonnx: masks.sam.encoder: reading ONNX model %s: %w", path, err)
	}
	if len(ins) != 1 || ins[0].DataType != ort.TensorElementDataTypeFloat || !dimsMatch(ins[0].Dimensions, []int64{1, 3, inputSize, inputSize}) {
		return fmt.Errorf("samonnx: masks.sam.encoder: %s must take one float32 input of shape (1,3,1024,1024) (the normalised, padded image), it takes %v; export sam.image_encoder as the README says", path, ins)
	}
	out, ok := findInfo(outs, "image_embeddings")
	if !ok && len(outs) == 1 {
		out, ok = outs[0], true
	}
	if !ok || !dimsMatch(out.Dimensions, []int64{1, 256, embSize, embSize}) {
		return fmt.Errorf("samonnx: masks.sam.encoder: %s must output image_embeddings (1,256,64,64), it outputs %v", path, outs)
	}
	opts, err := s.sessionOptions(s.threads)
	if err != nil {
		return fmt.Errorf("samonnx: encoder session options: %w", err)
	}
	defer opts.Destroy()
	s.enc, err = ort.NewDynamicAdvancedSession(path, []string{ins[0].Name}, []string{out.Name}, opts)
	if err != nil {
		return fmt.Errorf("samonnx: masks.sam.encoder: loading %s: %w", path, err)
	}
	return nil
}

func (s *Segmenter) openDecoder() error {
	path := s.cfg.Decoder
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return fmt.Errorf("samonnx: masks.sam.decoder: reading ONNX model %s: %w", path, err)
	}
	for _, n := range decoderInputs {
		if _, ok := findInfo(ins, n); !ok {
			return fmt.Errorf("samonnx: masks.sam.decoder: %s has no input %q (inputs %v); export it with SAM's scripts/export_onnx_model.py", path, n, ins)
		}
	}
	for _, n := range decoderOutputs {
		if _, ok := findInfo(outs, n); !ok {
			return fmt.Errorf("samonnx: masks.sam.decoder: %s has no output %q (outputs %v); export it with SAM's scripts/export_onnx_model.py", path, n, outs)
		}
	}
	pc, _ := findInfo(ins, "point_coords")
	if len(pc.Dimensions) != 3 {
		return fmt.Errorf("samonnx: masks.sam.decoder: %s: point_coords must be (batch, points, 2), it is %v", path, pc.Dimensions)
	}
	switch b := pc.Dimensions[0]; {
	case b == 1:
		s.decBatch = 1
	case b < 0:
		s.decBatch = s.cfg.PointsPerBatch
	default:
		s.decBatch = int(b)
	}
	// One intra-op thread: the generator runs decoder calls on s.threads goroutines.
	opts, err := s.sessionOptions(1)
	if err != nil {
		return fmt.Errorf("samonnx: decoder session options: %w", err)
	}
	defer opts.Destroy()
	s.dec, err = ort.NewDynamicAdvancedSession(path, decoderInputs, decoderOutputs, opts)
	if err != nil {
		return fmt.Errorf("samonnx: masks.sam.decoder: loading %s: %w", path, err)
	}
	return nil
}

func (s *Segmenter) describe() map[string]any {
	c := s.cfg
	size := func(p string) int64 {
		if st, err := os.Stat(p); err == nil {
			return st.Size()
		}
		return -1
	}
	return map[string]any{
		"encoder":                filepath.Base(c.Encoder),
		"encoder_bytes":          size(c.Encoder),
		"decoder":                filepath.Base(c.Decoder),
		"decoder_bytes":          size(c.Decoder),
		"points_per_side":        c.PointsPerSide,
		"points_per_batch":       c.PointsPerBatch,
		"mask_threshold":         c.MaskThreshold,
		"pred_iou_thresh":        c.PredIoUThresh,
		"stability_score_thresh": c.StabilityScoreThresh,
		"stability_score_offset": c.StabilityScoreOffset,
		"box_nms_thresh":         c.BoxNMSThresh,
		"min_mask_region_area":   c.MinMaskRegionArea,
		"crop_n_layers":          0,
		"onnxruntime":            s.version,
	}
}

// Name returns "sam-onnx".
func (s *Segmenter) Name() string { return Name }

// Params returns the generator parameters and the model files (base name and
// size) that determine the output.
func (s *Segmenter) Params() map[string]any {
	out := make(map[string]any, len(s.params))
	for k, v := range s.params {
		out[k] = v
	}
	return out
}

// Close releases the ONNX Runtime sessions. The runtime library stays loaded for
// the life of the process.
func (s *Segmenter) Close() error {
	var errs []error
	if s.enc != nil {
		errs = append(errs, s.enc.Destroy())
		s.enc = nil
	}
	if s.dec != nil {
		errs = append(errs, s.dec.Destroy())
		s.dec = nil
	}
	return errors.Join(errs...)
}

func (s *Segmenter) frameFor(w, h int) *frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frame == nil || s.frame.w != w || s.frame.h != h {
		s.frame = newFrame(w, h)
	}
	return s.frame
}

// Segment runs SAM's automatic mask generator on img and paints the kept masks
// into a label map in descending predicted IoU (later masks overwrite earlier
// ones; label i is the i-th mask; pixels in no mask are 0).
func (s *Segmenter) Segment(ctx context.Context, img image.Image) (*maskgen.LabelMap, error) {
	if s.enc == nil || s.dec == nil {
		return nil, errors.New("samonnx: Segment on a closed Segmenter")
	}
	rgb, w, h := rgb8(img)
	if w == 0 || h == 0 {
		return nil, fmt.Errorf("samonnx: empty image (%dx%d)", w, h)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	emb, err := s.encode(rgb, w, h)
	if err != nil {
		return nil, err
	}
	defer emb.Destroy()
	f := s.frameFor(w, h)
	cands, err := s.decodeGrid(ctx, emb, f)
	if err != nil {
		return nil, err
	}
	t0 := s.times.start()
	masks := s.gen.selectMasks(cands)
	s.times.since(phaseNMS, t0)
	if len(masks) > 65535 {
		return nil, fmt.Errorf("samonnx: %d masks exceed the 65535 region ids of a label map; lower masks.sam.points_per_side", len(masks))
	}
	scr := make([]*scratch, s.threads)
	for i := range scr {
		scr[i] = f.newScratch()
	}
	lm := &maskgen.LabelMap{Width: w, Height: h, Regions: len(masks)}
	lm.Labels = s.gen.paintMasks(f, masks, s.threads, scr, s.times)
	return lm, nil
}

// encode runs the image encoder on the preprocessed image.
func (s *Segmenter) encode(rgb []uint8, w, h int) (*ort.Tensor[float32], error) {
	t0 := s.times.start()
	nw, nh := resizedSize(w, h)
	resized := resizePIL(rgb, w, h, nw, nh)
	in, err := ort.NewEmptyTensor[float32](ort.NewShape(1, 3, inputSize, inputSize))
	if err != nil {
		return nil, fmt.Errorf("samonnx: encoder input: %w", err)
	}
	defer in.Destroy()
	encoderInput(resized, nw, nh, in.GetData())
	s.times.since(phasePreprocess, t0)
	t0 = s.times.start()
	defer s.times.since(phaseEncoder, t0)
	out, err := ort.NewEmptyTensor[float32](ort.NewShape(1, 256, embSize, embSize))
	if err != nil {
		return nil, fmt.Errorf("samonnx: encoder output: %w", err)
	}
	if err := s.enc.Run([]ort.Value{in}, []ort.Value{out}); err != nil {
		out.Destroy()
		return nil, fmt.Errorf("samonnx: running encoder %s: %w", s.cfg.Encoder, err)
	}
	return out, nil
}

// probeDecoder runs the decoder once on a zero embedding and one prompt, so that a
// decoder that cannot run fails at start-up, and learns how many masks it returns
// per prompt.
func (s *Segmenter) probeDecoder() error {
	emb, err := ort.NewEmptyTensor[float32](ort.NewShape(1, 256, embSize, embSize))
	if err != nil {
		return fmt.Errorf("samonnx: decoder probe: %w", err)
	}
	defer emb.Destroy()
	sh, err := newShared()
	if err != nil {
		return err
	}
	defer sh.destroy()
	b := &runBufs{}
	defer b.destroy()
	nm, err := s.runDecoder(emb, sh, b, [][2]float32{{512, 512}})
	if err != nil {
		return err
	}
	if nm != 1 && nm != 3 && nm != 4 {
		return fmt.Errorf("samonnx: masks.sam.decoder: %s returns %d masks per prompt; SAM's export returns 4 (or 1 with --return-single-mask)", s.cfg.Decoder, nm)
	}
	if nm == 1 {
		s.log.Warn("sam-onnx decoder returns a single mask per prompt (exported with --return-single-mask); SAM's generator uses the three multimask outputs", "decoder", s.cfg.Decoder)
	}
	s.nm = nm
	return nil
}

// shared are the decoder inputs every run uses (read-only).
type shared struct {
	maskIn, hasMask, origSize *ort.Tensor[float32]
}

func newShared() (*shared, error) {
	var sh shared
	var err error
	if sh.maskIn, err = ort.NewEmptyTensor[float32](ort.NewShape(1, 1, lowSize, lowSize)); err != nil {
		return nil, fmt.Errorf("samonnx: decoder inputs: %w", err)
	}
	if sh.hasMask, err = ort.NewTensor(ort.NewShape(1), []float32{0}); err != nil {
		sh.destroy()
		return nil, fmt.Errorf("samonnx: decoder inputs: %w", err)
	}
	// orig_im_size only sizes the export's full-resolution "masks" output, which the
	// generator never reads (it upscales low_res_masks itself, only where needed);
	// 1x1 keeps ONNX Runtime from filling a masks x H x W tensor per prompt.
	if sh.origSize, err = ort.NewTensor(ort.NewShape(2), []float32{1, 1}); err != nil {
		sh.destroy()
		return nil, fmt.Errorf("samonnx: decoder inputs: %w", err)
	}
	return &sh, nil
}

func (sh *shared) destroy() {
	for _, t := range []*ort.Tensor[float32]{sh.maskIn, sh.hasMask, sh.origSize} {
		if t != nil {
			t.Destroy()
		}
	}
}

// runBufs are one goroutine's decoder input and output tensors for b prompts.
type runBufs struct {
	b                int
	pc, pl, iou, low *ort.Tensor[float32]
}

func (r *runBufs) destroy() {
	for _, t := range []*ort.Tensor[float32]{r.pc, r.pl, r.iou, r.low} {
		if t != nil {
			t.Destroy()
		}
	}
	*r = runBufs{}
}

// runDecoder runs the decoder on the prompts at pts (each one foreground point plus
// SAM's padding point) and returns the number of masks per prompt; the outputs are
// left in r.iou and r.low. Outputs are allocated by ONNX Runtime on the first run
// (or when the batch size changes) and reused afterwards.
func (s *Segmenter) runDecoder(emb *ort.Tensor[float32], sh *shared, r *runBufs, pts [][2]float32) (int, error) {
	b := len(pts)
	if r.b != b || r.pc == nil {
		r.destroy()
		var err error
		if r.pc, err = ort.NewEmptyTensor[float32](ort.NewShape(int64(b), 2, 2)); err != nil {
			return 0, fmt.Errorf("samonnx: point_coords: %w", err)
		}
		if r.pl, err = ort.NewEmptyTensor[float32](ort.NewShape(int64(b), 2)); err != nil {
			return 0, fmt.Errorf("samonnx: point_labels: %w", err)
		}
		r.b = b
	}
	// Each prompt is one foreground point plus SAM's padding point (0,0) label −1,
	// which SamPredictor adds when there is no box and the ONNX model expects.
	coords, labels := r.pc.GetData(), r.pl.GetData()
	for i, p := range pts {
		coords[4*i], coords[4*i+1], coords[4*i+2], coords[4*i+3] = p[0], p[1], 0, 0
		labels[2*i], labels[2*i+1] = 1, -1
	}
	outs := []ort.Value{nil, nil}
	if r.iou != nil {
		outs = []ort.Value{r.iou, r.low}
	}
	if err := s.dec.Run([]ort.Value{emb, r.pc, r.pl, sh.maskIn, sh.hasMask, sh.origSize}, outs); err != nil {
		return 0, fmt.Errorf("samonnx: running decoder %s: %w", s.cfg.Decoder, err)
	}
	if r.iou == nil {
		iou, ok1 := outs[0].(*ort.Tensor[float32])
		low, ok2 := outs[1].(*ort.Tensor[float32])
		if !ok1 || !ok2 {
			for _, v := range outs {
				v.Destroy()
			}
			return 0, fmt.Errorf("samonnx: decoder %s: iou_predictions and low_res_masks must be float32 tensors", s.cfg.Decoder)
		}
		r.iou, r.low = iou, low
	}
	ls, is := r.low.GetShape(), r.iou.GetShape()
	if len(ls) != 4 || ls[0] != int64(b) || ls[2] != lowSize || ls[3] != lowSize || is.FlattenedSize() != int64(b)*ls[1] {
		return 0, fmt.Errorf("samonnx: decoder %s returned low_res_masks %v and iou_predictions %v for %d prompts; want (%d,masks,256,256) and (%d,masks)",
			s.cfg.Decoder, ls, is, b, b, b)
	}
	return int(ls[1]), nil
}

// decodeGrid runs the decoder over the point grid in batches on s.threads
// goroutines and returns the masks that pass the IoU and stability filters.
func (s *Segmenter) decodeGrid(ctx context.Context, emb *ort.Tensor[float32], f *frame) ([]candidate, error) {
	pts := promptCoords(s.cfg.PointsPerSide, f.w, f.h)
	sh, err := newShared()
	if err != nil {
		return nil, err
	}
	defer sh.destroy()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	results := make([][]candidate, (len(pts)+s.decBatch-1)/s.decBatch)
	errs := make([]error, s.threads)
	var wg sync.WaitGroup
	for t := 0; t < s.threads; t++ {
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			defer s.times.pin()()
			sc := f.newScratch()
			var bufs runBufs
			defer bufs.destroy()
			for j := range jobs {
				lo, hi := j*s.decBatch, min((j+1)*s.decBatch, len(pts))
				r, err := s.decodeBatch(pts, lo, hi, emb, sh, &bufs, f, sc)
				if err != nil {
					errs[t] = err
					cancel()
					return
				}
				results[j] = r
			}
		}(t)
	}
feed:
	for j := range results {
		select {
		case jobs <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return slices.Concat(results...), nil
}

// decodeBatch runs the decoder on grid points [lo, hi) and filters the resulting
// masks.
func (s *Segmenter) decodeBatch(pts [][2]float32, lo, hi int, emb *ort.Tensor[float32], sh *shared, bufs *runBufs, f *frame, sc *scratch) ([]candidate, error) {
	t0 := s.times.start()
	nm, err := s.runDecoder(emb, sh, bufs, pts[lo:hi])
	if err != nil {
		return nil, err
	}
	s.times.since(phaseDecoder, t0)
	t0 = s.times.start()
	defer s.times.since(phaseFilter, t0)
	if nm != s.nm {
		return nil, fmt.Errorf("samonnx: decoder %s returned %d masks per prompt, %d at start-up", s.cfg.Decoder, nm, s.nm)
	}
	first := 0
	if nm == 4 {
		first = 1 // SAM's multimask output: masks 1..3 (mask 0 is the single-mask token)
	}
	iou, low := bufs.iou.GetData(), bufs.low.GetData()
	plane := lowSize * lowSize
	var out []candidate
	for i := 0; i < hi-lo; i++ {
		pt := lo + i
		if s.onDecode != nil {
			s.onDecode(pt, pts[pt], iou[i*nm:(i+1)*nm], low[i*nm*plane:(i+1)*nm*plane])
		}
		for k := first; k < nm; k++ {
			order := pt*(nm-first) + (k - first)
			if c, ok := s.gen.filterMask(f, sc, order, iou[i*nm+k], low[(i*nm+k)*plane:(i*nm+k+1)*plane]); ok {
				out = append(out, c)
			}
		}
	}
	return out, nil
}
