// Package torchfile reads PyTorch checkpoint files (torch.save) without Python: the
// legacy format (_use_new_zipfile_serialization=False, what the SAM-DiffSR and SRDiff
// reference code writes) and the zip format (torch.save's default since 1.6).
//
// The pickle inside is read with github.com/nlpodyssey/gopickle, which never runs
// Python code, and only the globals a tensor checkpoint needs are accepted: torch's
// tensor and parameter rebuild functions, its storage classes and
// collections.OrderedDict. A pickle naming anything else (os.system, builtins.eval, a
// model class, ...) is refused with a RefusedError. Before unpickling, every length the
// pickle declares is checked against the bytes present, and storages are checked
// against their records, so a damaged or hostile file cannot make the reader allocate
// more than the file holds (and never more than Options.MaxBytes).
package torchfile

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// DefaultMaxBytes bounds the file size (legacy format) and the total storage bytes
// (zip format) when Options.MaxBytes is 0.
const DefaultMaxBytes int64 = 4 << 30

// Formats of a torch.save file.
const (
	FormatLegacy = "legacy"
	FormatZip    = "zip"
)

// Options tune Load.
type Options struct {
	// MaxBytes is the most bytes of tensor data (and, for the legacy format, of file)
	// Load accepts; 0 means DefaultMaxBytes.
	MaxBytes int64
}

// File is a loaded checkpoint.
type File struct {
	// Format is FormatLegacy or FormatZip.
	Format string
	// Root is the saved object: *Dict for dicts and OrderedDicts, []any for lists
	// and tuples, *Tensor, and Go scalars (int, *big.Int, float64, string, bool, nil).
	Root any
}

// Dict is a Python dict or OrderedDict, in insertion order.
type Dict struct {
	Keys   []any
	Values []any
}

// Get returns the value of a string key.
func (d *Dict) Get(key string) (any, bool) {
	for i, k := range d.Keys {
		if s, ok := k.(string); ok && s == key {
			return d.Values[i], true
		}
	}
	return nil, false
}

// legacyMagic is torch's legacy-format magic number (a pickled int) and the
// protocol version that follows it.
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

const legacyProtocol = 1001

// Load reads the torch.save file at path. Errors name the file.
func Load(path string, opt Options) (f *File, err error) {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	defer func() {
		// gopickle has panicking corners (e.g. unhashable dict keys); a bad file must
		// come back as an error.
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("torchfile: %s: malformed pickle (%v)", path, r)
		}
	}()
	if zr, zerr := zip.OpenReader(path); zerr == nil {
		defer zr.Close()
		root, err := loadZip(&zr.Reader, opt)
		if err != nil {
			return nil, fmt.Errorf("torchfile: %s (zip format): %w", path, err)
		}
		return &File{Format: FormatZip, Root: root}, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("torchfile: %w", err)
	}
	if st.Size() > opt.MaxBytes {
		return nil, fmt.Errorf("torchfile: %s is %d bytes, more than the limit of %d", path, st.Size(), opt.MaxBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("torchfile: %w", err)
	}
	root, err := loadLegacy(data)
	if err != nil {
		return nil, fmt.Errorf("torchfile: %s (legacy format): %w", path, err)
	}
	return &File{Format: FormatLegacy, Root: root}, nil
}

// unpickle reads one pickle from the start of data (checked by pickleLength first)
// with the restricted globals, and returns the object and the pickle's length.
func unpickle(data []byte, persistent func(any) (any, error)) (any, int, error) {
	n, err := pickleLength(data)
	if err != nil {
		return nil, 0, err
	}
	u := pickle.NewUnpickler(bytes.NewReader(data[:n]))
	u.FindClass = findClass
	u.PersistentLoad = persistent
	v, err := u.Load()
	if err != nil {
		return nil, 0, err
	}
	return v, n, nil
}

func noPersistent(any) (any, error) {
	return nil, errors.New("unexpected persistent id in a header pickle")
}

// storageID parses a storage persistent id ('storage', cls, key, location, numel[, view]).
func storageID(pid any, withView bool) (dt DType, key string, numel int, err error) {
	t, ok := pid.(*types.Tuple)
	if !ok || t.Len() < 5 {
		return 0, "", 0, fmt.Errorf("persistent id %v is not a storage tuple", pid)
	}
	if s, _ := t.Get(0).(string); s != "storage" {
		return 0, "", 0, fmt.Errorf("persistent id of type %v; only storages are supported", t.Get(0))
	}
	cls, ok := t.Get(1).(*storageClass)
	if !ok {
		return 0, "", 0, fmt.Errorf("storage class %v is not a torch storage type", t.Get(1))
	}
	key, ok = t.Get(2).(string)
	if !ok {
		return 0, "", 0, fmt.Errorf("storage key %v is not a string", t.Get(2))
	}
	numel, err = asInt(t.Get(4))
	if err != nil || numel < 0 {
		return 0, "", 0, fmt.Errorf("storage %s size %v: %v", key, t.Get(4), err)
	}
	if withView && t.Len() > 5 && t.Get(5) != nil {
		return 0, "", 0, fmt.Errorf("storage %s is a view of another storage (very old torch.save); re-save the checkpoint with a current torch", key)
	}
	return cls.dtype, key, numel, nil
}

// collector records the storages and tensors a pickle creates.
type collector struct {
	storages map[string]*storage
	order    []*storage
	maxBytes int64
	total    int64
}

func (c *collector) persistent(withView bool) func(any) (any, error) {
	return func(pid any) (any, error) {
		dt, key, numel, err := storageID(pid, withView)
		if err != nil {
			return nil, err
		}
		if s, ok := c.storages[key]; ok {
			if s.dtype != dt || s.numel != numel {
				return nil, fmt.Errorf("storage %s is named twice with different types or sizes", key)
			}
			return s, nil
		}
		c.total += int64(numel) * int64(dt.Size())
		if c.total > c.maxBytes {
			return nil, fmt.Errorf("the storages hold more than the limit of %d bytes", c.maxBytes)
		}
		s := &storage{dtype: dt, key: key, numel: numel}
		c.storages[key] = s
		c.order = append(c.order, s)
		return s, nil
	}
}

// loadLegacy reads the legacy format: pickles of the magic number, the protocol
// version, sys_info and the object, the list of storage keys, then each storage as
// an 8-byte element count and its bytes.
func loadLegacy(data []byte) (any, error) {
	if len(data) >= 262 && string(data[257:262]) == "ustar" {
		return nil, errors.New("this is the tar format of torch < 0.4; load and re-save it with a current torch")
	}
	p := 0
	next := func(what string, persistent func(any) (any, error)) (any, error) {
		v, n, err := unpickle(data[p:], persistent)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		p += n
		return v, nil
	}
	magic, err := next("magic number", noPersistent)
	if err != nil {
		return nil, fmt.Errorf("not a torch.save file: %w", err)
	}
	if m, ok := magic.(*big.Int); !ok || m.Cmp(legacyMagic) != 0 {
		return nil, errors.New("not a torch.save file (no torch magic number)")
	}
	proto, err := next("protocol version", noPersistent)
	if err != nil {
		return nil, err
	}
	if v, _ := proto.(int); v != legacyProtocol {
		return nil, fmt.Errorf("torch protocol version %v, want %d", proto, legacyProtocol)
	}
	sys, err := next("sys_info", noPersistent)
	if err != nil {
		return nil, err
	}
	if d, ok := sys.(*types.Dict); ok {
		if le, ok := d.Get("little_endian"); ok && le == false {
			return nil, errors.New("the file was written on a big-endian machine; not supported")
		}
	}
	c := &collector{storages: map[string]*storage{}, maxBytes: int64(len(data))}
	root, err := next("object", c.persistent(true))
	if err != nil {
		return nil, err
	}
	keysV, err := next("storage keys", noPersistent)
	if err != nil {
		return nil, err
	}
	keys, ok := keysV.(*types.List)
	if !ok {
		return nil, fmt.Errorf("storage keys are %T, want a list", keysV)
	}
	for _, kv := range *keys {
		key, _ := kv.(string)
		s, ok := c.storages[key]
		if !ok {
			return nil, fmt.Errorf("storage key %v is not used by the object", kv)
		}
		if len(data)-p < 8 {
			return nil, fmt.Errorf("the file ends before storage %s (truncated)", key)
		}
		n := binary.LittleEndian.Uint64(data[p:])
		p += 8
		if n != uint64(s.numel) {
			return nil, fmt.Errorf("storage %s holds %d elements, the object says %d", key, n, s.numel)
		}
		nb := s.numel * s.dtype.Size()
		if len(data)-p < nb {
			return nil, fmt.Errorf("the file ends inside storage %s (truncated: %d of %d bytes)", key, len(data)-p, nb)
		}
		s.raw = data[p : p+nb]
		p += nb
	}
	return finish(root, c)
}

// loadZip reads the zip format: <name>/data.pkl and a record <name>/data/<key> per storage.
func loadZip(zr *zip.Reader, opt Options) (any, error) {
	byName := map[string]*zip.File{}
	var pkl *zip.File
	for _, f := range zr.File {
		byName[f.Name] = f
		if path.Base(f.Name) == "data.pkl" && strings.Count(f.Name, "/") == 1 {
			if pkl != nil {
				return nil, errors.New("more than one data.pkl")
			}
			pkl = f
		}
		if path.Base(f.Name) == "constants.pkl" {
			return nil, errors.New("this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint")
		}
	}
	if pkl == nil {
		return nil, errors.New("no data.pkl record (not a torch.save file)")
	}
	prefix := strings.TrimSuffix(pkl.Name, "data.pkl")
	if bo, ok := byName[prefix+"byteorder"]; ok {
		b, err := readRecord(bo, 16)
		if err != nil {
			return nil, err
		}
		if string(b) != "little" {
			return nil, fmt.Errorf("byte order %q; only little-endian files are supported", b)
		}
	}
	const maxPickle = 256 << 20
	pdata, err := readRecord(pkl, maxPickle)
	if err != nil {
		return nil, err
	}
	c := &collector{storages: map[string]*storage{}, maxBytes: opt.MaxBytes}
	root, _, err := unpickle(pdata, c.persistent(false))
	if err != nil {
		return nil, fmt.Errorf("data.pkl: %w", err)
	}
	for _, s := range c.order {
		rec, ok := byName[prefix+"data/"+s.key]
		if !ok {
			return nil, fmt.Errorf("no record data/%s for a storage the object uses", s.key)
		}
		nb := int64(s.numel) * int64(s.dtype.Size())
		if rec.UncompressedSize64 != uint64(nb) {
			return nil, fmt.Errorf("record data/%s holds %d bytes, its storage needs %d", s.key, rec.UncompressedSize64, nb)
		}
		if s.raw, err = readRecord(rec, nb); err != nil {
			return nil, err
		}
		if int64(len(s.raw)) != nb {
			return nil, fmt.Errorf("record data/%s: %d bytes, want %d", s.key, len(s.raw), nb)
		}
	}
	return finish(root, c)
}

// readRecord reads a zip record of at most limit bytes.
func readRecord(f *zip.File, limit int64) ([]byte, error) {
	if f.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("record %s is %d bytes, more than %d", f.Name, f.UncompressedSize64, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", f.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", f.Name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("record %s is longer than its header says", f.Name)
	}
	return b, nil
}

// finish materialises every tensor and converts gopickle's containers.
func finish(root any, c *collector) (any, error) {
	for _, s := range c.order {
		if s.raw == nil {
			return nil, fmt.Errorf("storage %s has no data in the file", s.key)
		}
	}
	seen := map[any]any{}
	return convert(root, seen, 0)
}

const maxDepth = 1000

func convert(v any, seen map[any]any, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("objects nested deeper than 1000 levels")
	}
	switch x := v.(type) {
	case *Tensor:
		if x.Data == nil {
			if err := x.materialize(); err != nil {
				return nil, fmt.Errorf("tensor on storage %s: %w", x.storage.key, err)
			}
		}
		return x, nil
	case *types.Dict:
		if d, ok := seen[x]; ok {
			return d, nil
		}
		d := &Dict{}
		seen[x] = d
		for _, e := range *x {
			if err := d.add(e.Key, e.Value, seen, depth); err != nil {
				return nil, err
			}
		}
		return d, nil
	case *types.OrderedDict:
		if d, ok := seen[x]; ok {
			return d, nil
		}
		d := &Dict{}
		seen[x] = d
		for e := x.List.Front(); e != nil; e = e.Next() {
			en := e.Value.(*types.OrderedDictEntry)
			if err := d.add(en.Key, en.Value, seen, depth); err != nil {
				return nil, err
			}
		}
		return d, nil
	case *types.List:
		return convertSlice(*x, seen, depth)
	case *types.Tuple:
		return convertSlice(*x, seen, depth)
	case *storage:
		return nil, fmt.Errorf("a bare storage (%s) outside a tensor is not supported", x.key)
	}
	return v, nil
}

func (d *Dict) add(k, v any, seen map[any]any, depth int) error {
	cv, err := convert(v, seen, depth+1)
	if err != nil {
		if s, ok := k.(string); ok {
			return fmt.Errorf("%s: %w", s, err)
		}
		return err
	}
	d.Keys = append(d.Keys, k)
	d.Values = append(d.Values, cv)
	return nil
}

func convertSlice(items []any, seen map[any]any, depth int) ([]any, error) {
	out := make([]any, len(items))
	for i, it := range items {
		cv, err := convert(it, seen, depth+1)
		if err != nil {
			return nil, err
		}
		out[i] = cv
	}
	return out, nil
}
