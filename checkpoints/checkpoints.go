// Package checkpoints reads and writes samdiffsr checkpoints: standard safetensors files
// plus a SHA-256 manifest, in one folder per step.
//
// # Layout
//
// A checkpoint is a folder (by convention RUN/checkpoints/step_000001200) holding:
//
//   - model.safetensors: the network weights, float32 (dtype F32), one tensor per
//     parameter under the model's stable parameter name (model.Param.Name, e.g. the
//     U-Net's and the RRDB's weights; see model/doc.go for the naming scheme).
//   - optimizer.safetensors (optional): the optimizer state as named float32 tensors
//     (for Adam, the first and second moments of every parameter) and its scalars (the
//     Adam step) in the file's __metadata__.
//   - manifest.json, written last: the format version, the step and, for each file, its
//     size and SHA-256. A checkpoint folder is complete only when its manifest exists and
//     every listed file matches it; anything else (a crash mid-write, a truncated or
//     edited file) is reported as damaged and skipped by Latest.
//
// Both safetensors files carry __metadata__ (string to string, as the format requires):
// format_version, kind (model|optimizer), step, stage, config_hash (configs.Config.Hash),
// modulation, metrics (a JSON object of validation metrics), config (the effective
// configuration as YAML, so a checkpoint is self-describing), plus any extra keys.
//
// Every file is written atomically (temporary file, fsync, rename), and the whole folder
// is first assembled under a temporary name and renamed into place, so a reader never
// sees a half-written checkpoint under its final name.
//
// The files load in any safetensors reader (Python's safetensors, candle, ...): an 8-byte
// little-endian header length, a JSON header with dtype, shape and data_offsets per
// tensor and the __metadata__ map, then the raw little-endian data.
package checkpoints

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nlpodyssey/safetensors"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
)

// FormatVersion is written into every checkpoint; Load rejects other versions.
const FormatVersion = "1"

// File names inside a checkpoint folder.
const (
	ModelFile     = "model.safetensors"
	OptimizerFile = "optimizer.safetensors"
	ManifestFile  = "manifest.json"
	// DirPrefix starts the name of every checkpoint folder: step_%09d.
	DirPrefix = "step_"
	// SubDir is the folder of a run directory that holds its checkpoints.
	SubDir = "checkpoints"
)

// ErrNoCheckpoint is returned (wrapped) by Latest when a folder holds no complete
// checkpoint.
var ErrNoCheckpoint = errors.New("no complete checkpoint")

// Tensor is a named float32 array in row-major order.
type Tensor struct {
	Shape []int
	Data  []float32
}

// Meta is what a checkpoint says about itself.
type Meta struct {
	// Step is the number of optimizer steps taken.
	Step int64
	// Stage is "rrdb" or "diffusion".
	Stage string
	// ConfigHash is configs.Config.Hash() of the configuration that produced it.
	ConfigHash string
	// Modulation is the diffusion modulation ("paper", "reference", "none").
	Modulation string
	// Config is the effective configuration as YAML.
	Config string
	// Metrics holds the latest validation metrics (e.g. psnr_y, ssim_y), if any.
	Metrics map[string]float64
	// Extra holds more string metadata (written into model.safetensors).
	Extra map[string]string
}

// Checkpoint is a loaded or to-be-saved checkpoint.
type Checkpoint struct {
	// Dir is the folder the checkpoint was loaded from (set by Load).
	Dir  string
	Meta Meta
	// Model maps parameter names to weights.
	Model map[string]Tensor
	// Optimizer maps state names to tensors; nil when the checkpoint has none.
	Optimizer map[string]Tensor
	// OptimizerMeta holds the optimizer's scalars (e.g. "adam_step").
	OptimizerMeta map[string]string
}

// Manifest lists the files of a checkpoint with their digests.
type Manifest struct {
	FormatVersion string                       `json:"format_version"`
	Step          int64                        `json:"step"`
	Files         map[string]ManifestFileEntry `json:"files"`
}

// ManifestFileEntry is one file of a Manifest.
type ManifestFileEntry struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// DirName is the folder name of the checkpoint at step.
func DirName(step int64) string { return fmt.Sprintf("%s%09d", DirPrefix, step) }

// Save writes c as a complete checkpoint folder dir (replacing one already there).
func Save(dir string, c Checkpoint) error {
	if len(c.Model) == 0 {
		return fmt.Errorf("checkpoints: save %s: no model tensors", dir)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("checkpoints: create %s: %w", parent, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("checkpoints: create temporary folder in %s: %w", parent, err)
	}
	defer os.RemoveAll(tmp)

	man := Manifest{FormatVersion: FormatVersion, Step: c.Meta.Step, Files: map[string]ManifestFileEntry{}}
	meta, err := modelMetadata(c.Meta)
	if err != nil {
		return fmt.Errorf("checkpoints: save %s: %w", dir, err)
	}
	if err := writeTensors(filepath.Join(tmp, ModelFile), c.Model, meta, &man); err != nil {
		return err
	}
	if c.Optimizer != nil {
		om := map[string]string{
			"format_version": FormatVersion,
			"kind":           "optimizer",
			"step":           strconv.FormatInt(c.Meta.Step, 10),
			"config_hash":    c.Meta.ConfigHash,
		}
		for k, v := range c.OptimizerMeta {
			om[k] = v
		}
		if err := writeTensors(filepath.Join(tmp, OptimizerFile), c.Optimizer, om, &man); err != nil {
			return err
		}
	}
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return fmt.Errorf("checkpoints: encode manifest: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(tmp, ManifestFile), append(mj, '\n'), 0o644); err != nil {
		return fmt.Errorf("checkpoints: %w", err)
	}
	// Swap into place: move any old folder aside first, so the final name always holds
	// either the old complete checkpoint or the new one.
	var old string
	if _, err := os.Stat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("checkpoints: move old %s aside: %w", dir, err)
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			os.Rename(old, dir)
		}
		return fmt.Errorf("checkpoints: rename %s into %s: %w", tmp, dir, err)
	}
	if d, err := os.Open(parent); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func modelMetadata(m Meta) (map[string]string, error) {
	md := map[string]string{}
	for k, v := range m.Extra {
		md[k] = v
	}
	metrics := m.Metrics
	if metrics == nil {
		metrics = map[string]float64{}
	}
	for k, v := range metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("metric %s is %v; not writable as JSON", k, v)
		}
	}
	mj, err := json.Marshal(metrics)
	if err != nil {
		return nil, fmt.Errorf("encode metrics: %w", err)
	}
	md["format_version"] = FormatVersion
	md["kind"] = "model"
	md["step"] = strconv.FormatInt(m.Step, 10)
	md["stage"] = m.Stage
	md["config_hash"] = m.ConfigHash
	md["modulation"] = m.Modulation
	md["metrics"] = string(mj)
	md["config"] = m.Config
	return md, nil
}

// f32View adapts a Tensor to safetensors.View.
type f32View struct {
	shape []uint64
	data  []byte
}

func (v f32View) DType() safetensors.DType { return safetensors.F32 }
func (v f32View) Shape() []uint64          { return v.shape }
func (v f32View) Data() []byte             { return v.data }
func (v f32View) DataLen() uint64          { return uint64(len(v.data)) }

func toView(name string, t Tensor) (f32View, error) {
	n := 1
	shape := make([]uint64, len(t.Shape))
	for i, d := range t.Shape {
		if d < 0 {
			return f32View{}, fmt.Errorf("tensor %s: negative dimension in shape %v", name, t.Shape)
		}
		n *= d
		shape[i] = uint64(d)
	}
	if n != len(t.Data) {
		return f32View{}, fmt.Errorf("tensor %s: shape %v needs %d values, has %d", name, t.Shape, n, len(t.Data))
	}
	b := make([]byte, 4*len(t.Data))
	for i, v := range t.Data {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return f32View{shape: shape, data: b}, nil
}

func writeTensors(path string, ts map[string]Tensor, md map[string]string, man *Manifest) error {
	views := make(map[string]f32View, len(ts))
	for name, t := range ts {
		if name == "" || name == "__metadata__" {
			return fmt.Errorf("checkpoints: %s: invalid tensor name %q", path, name)
		}
		v, err := toView(name, t)
		if err != nil {
			return fmt.Errorf("checkpoints: %s: %w", path, err)
		}
		views[name] = v
	}
	h := sha256.New()
	var size int64
	err := fsutil.WriteAtomic(path, 0o644, func(w io.Writer) error {
		cw := &countWriter{w: io.MultiWriter(w, h)}
		err := safetensors.SerializeToWriter(views, md, cw)
		size = cw.n
		return err
	})
	if err != nil {
		return fmt.Errorf("checkpoints: %w", err)
	}
	man.Files[filepath.Base(path)] = ManifestFileEntry{Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Verify checks that dir is a complete checkpoint: its manifest parses, has this
// format version, and every file it lists exists with the recorded size and SHA-256.
// It returns the manifest.
func Verify(dir string) (Manifest, error) {
	man, err := ReadManifest(dir)
	if err != nil {
		return man, err
	}
	for name, want := range man.Files {
		p := filepath.Join(dir, name)
		sum, size, err := fsutil.FileSHA256(p)
		if err != nil {
			return Manifest{}, fmt.Errorf("checkpoints: checkpoint %s is damaged: %w", dir, err)
		}
		if size != want.Size || sum != want.SHA256 {
			return Manifest{}, fmt.Errorf("checkpoints: %s is damaged: %d bytes with SHA-256 %s, manifest says %d bytes with %s; use an earlier checkpoint",
				p, size, short(sum), want.Size, short(want.SHA256))
		}
	}
	return man, nil
}

// ReadManifest reads and checks the manifest of the checkpoint folder dir (format
// version, file names) without hashing the files it lists: Verify does that.
func ReadManifest(dir string) (Manifest, error) {
	mpath := filepath.Join(dir, ManifestFile)
	data, err := os.ReadFile(mpath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Manifest{}, fmt.Errorf("checkpoints: %s is not a complete checkpoint: no %s (interrupted write?); use an earlier checkpoint", dir, ManifestFile)
		}
		return Manifest{}, fmt.Errorf("checkpoints: read %s: %w", mpath, err)
	}
	var man Manifest
	if err := json.Unmarshal(data, &man); err != nil {
		return Manifest{}, fmt.Errorf("checkpoints: %s is damaged: %w", mpath, err)
	}
	if man.FormatVersion != FormatVersion {
		return Manifest{}, fmt.Errorf("checkpoints: %s has format version %q; this samdiffsr reads %q", mpath, man.FormatVersion, FormatVersion)
	}
	if _, ok := man.Files[ModelFile]; !ok {
		return Manifest{}, fmt.Errorf("checkpoints: %s lists no %s", mpath, ModelFile)
	}
	for name := range man.Files {
		if strings.ContainsAny(name, `/\`) || name == "." || name == ".." || name == "" {
			return Manifest{}, fmt.Errorf("checkpoints: %s lists a path %q; only file names are allowed", mpath, name)
		}
	}
	return man, nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

// Resolve turns what a user passed as --checkpoint into a checkpoint folder: a
// checkpoint folder itself, a run directory or a folder of step_* folders (its latest
// complete checkpoint), or a model.safetensors file (its folder).
func Resolve(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("checkpoints: %s: %w (pass a checkpoint folder, a run directory or a model.safetensors file)", path, err)
	}
	if !st.IsDir() {
		return filepath.Dir(path), nil
	}
	if _, err := os.Stat(filepath.Join(path, ManifestFile)); err == nil {
		return path, nil
	}
	if _, err := os.Stat(filepath.Join(path, ModelFile)); err == nil {
		return path, nil
	}
	return Latest(path)
}

// Load reads the checkpoint at path (see Resolve for what path may be), verifying its
// manifest. A missing, incomplete or damaged checkpoint is an error naming the path.
//
// A model.safetensors file with no manifest beside it (e.g. one exported by another
// tool) is accepted on the safetensors format's own checks alone.
func Load(path string) (*Checkpoint, error) {
	dir, err := Resolve(path)
	if err != nil {
		return nil, err
	}
	hasManifest := true
	if _, err := os.Stat(filepath.Join(dir, ManifestFile)); errors.Is(err, os.ErrNotExist) {
		hasManifest = false
	}
	st, _ := os.Stat(path)
	bareFile := st != nil && !st.IsDir()
	if hasManifest || !bareFile {
		if _, err := Verify(dir); err != nil {
			return nil, err
		}
	}
	c := &Checkpoint{Dir: dir}
	mp := filepath.Join(dir, ModelFile)
	if bareFile && !hasManifest {
		mp = path
	}
	model, md, err := readTensors(mp)
	if err != nil {
		return nil, err
	}
	c.Model = model
	if c.Meta, err = parseMeta(md); err != nil {
		return nil, fmt.Errorf("checkpoints: %s: %w", mp, err)
	}
	op := filepath.Join(dir, OptimizerFile)
	if _, err := os.Stat(op); err == nil && (hasManifest || !bareFile) {
		opt, omd, err := readTensors(op)
		if err != nil {
			return nil, err
		}
		c.Optimizer = opt
		c.OptimizerMeta = omd
	}
	if err := upgradeLegacy(c); err != nil {
		return nil, err
	}
	return c, nil
}

func parseMeta(md map[string]string) (Meta, error) {
	var m Meta
	if v := md["format_version"]; v != "" && v != FormatVersion {
		return m, fmt.Errorf("format version %q; this samdiffsr reads %q", v, FormatVersion)
	}
	if s := md["step"]; s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return m, fmt.Errorf("metadata step %q: %w", s, err)
		}
		m.Step = n
	}
	m.Stage = md["stage"]
	m.ConfigHash = md["config_hash"]
	m.Modulation = md["modulation"]
	m.Config = md["config"]
	if s := md["metrics"]; s != "" {
		if err := json.Unmarshal([]byte(s), &m.Metrics); err != nil {
			return m, fmt.Errorf("metadata metrics %q: %w", s, err)
		}
	}
	known := map[string]bool{"format_version": true, "kind": true, "step": true, "stage": true, "config_hash": true,
		"modulation": true, "metrics": true, "config": true}
	for k, v := range md {
		if !known[k] {
			if m.Extra == nil {
				m.Extra = map[string]string{}
			}
			m.Extra[k] = v
		}
	}
	return m, nil
}

func readTensors(path string) (map[string]Tensor, map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoints: read %s: %w", path, err)
	}
	st, err := safetensors.Deserialize(data)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoints: %s is not a valid safetensors file: %w", path, err)
	}
	_, meta, err := safetensors.ReadMetadata(data)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoints: %s: %w", path, err)
	}
	out := make(map[string]Tensor, st.Len())
	for _, nv := range st.Tensors() {
		if nv.TensorView.DType() != safetensors.F32 {
			return nil, nil, fmt.Errorf("checkpoints: %s: tensor %s has dtype %s; only F32 is supported", path, nv.Name, nv.TensorView.DType())
		}
		raw := nv.TensorView.Data()
		vals := make([]float32, len(raw)/4)
		for i := range vals {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		shape := make([]int, len(nv.TensorView.Shape()))
		for i, d := range nv.TensorView.Shape() {
			shape[i] = int(d)
		}
		out[nv.Name] = Tensor{Shape: shape, Data: vals}
	}
	md := meta.Metadata()
	if md == nil {
		md = map[string]string{}
	}
	return out, md, nil
}

// ParamCount is the number of float32 values in ts.
func ParamCount(ts map[string]Tensor) int {
	n := 0
	for _, t := range ts {
		n += len(t.Data)
	}
	return n
}
