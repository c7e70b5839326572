package checkpoints

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
)

// safetensorsBytes builds a safetensors file: 8-byte header length, JSON header, data.
func safetensorsBytes(header string, data []byte) []byte {
	out := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	return append(append(out, header...), data...)
}

// hostileCheckpoints are malformed model.safetensors files the checkpoint reader must
// refuse with an error naming the file, without panicking or allocating what they claim.
func hostileCheckpoints() map[string][]byte {
	hugeLen := make([]byte, 16)
	binary.LittleEndian.PutUint64(hugeLen, 1<<62)
	return map[string][]byte{
		"zero-length":        nil,
		"short":              {1, 2, 3},
		"png bytes":          []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"),
		"header length 2^62": hugeLen,
		"header not json":    safetensorsBytes("not json at all!", nil),
		"offsets past end": safetensorsBytes(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`,
			[]byte{1, 2, 3}),
		"shape claims 2^40": safetensorsBytes(`{"w":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,8]}}`,
			make([]byte, 8)),
		"negative shape": safetensorsBytes(`{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, make([]byte, 8)),
		"wrong dtype":    safetensorsBytes(`{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`, make([]byte, 8)),
		"bad step metadata": safetensorsBytes(`{"__metadata__":{"step":"many"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`,
			make([]byte, 8)),
	}
}

// TestLoadHostileFiles: every malformed weights file, loaded as a bare file and inside
// a checkpoint folder, is an error naming the file; none panics or allocates more
// than a few MB.
func TestLoadHostileFiles(t *testing.T) {
	for name, data := range hostileCheckpoints() {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "solo")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, ModelFile)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			// A manifest that vouches for the bytes, so the folder form reads them too.
			sum, size, err := fsutil.FileSHA256(path)
			if err != nil {
				t.Fatal(err)
			}
			man, _ := json.Marshal(Manifest{FormatVersion: FormatVersion, Files: map[string]ManifestFileEntry{ModelFile: {Size: size, SHA256: sum}}})
			if err := os.WriteFile(filepath.Join(dir, ManifestFile), man, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, arg := range []string{path, dir} {
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				_, err := Load(arg)
				runtime.ReadMemStats(&after)
				if err == nil || !strings.Contains(err.Error(), path) {
					t.Errorf("Load(%s): %v", arg, err)
				}
				if a := after.TotalAlloc - before.TotalAlloc; a > 16<<20 {
					t.Errorf("Load(%s) allocated %d MB for a %d-byte file", arg, a>>20, len(data))
				}
			}
		})
	}
}

// FuzzReadTensors: no byte string panics the safetensors reader; errors name the file.
func FuzzReadTensors(f *testing.F) {
	for _, data := range hostileCheckpoints() {
		f.Add(data)
	}
	f.Add(safetensorsBytes(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.safetensors")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := readTensors(path); err != nil && !strings.Contains(err.Error(), path) {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
