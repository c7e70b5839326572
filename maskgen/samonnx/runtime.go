//go:build cgo

package samonnx

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// MinRuntimeVersion is the oldest ONNX Runtime library onnxruntime_go v1.27 can use
// (it asks for C API version 24).
const MinRuntimeVersion = "1.24"

// LibraryEnv is the environment variable consulted when masks.sam.library is empty.
const LibraryEnv = "ONNXRUNTIME_LIB"

// howToGet is appended to every library error.
const howToGet = "get one with `make onnxruntime` (fetches third_party/onnxruntime/libonnxruntime.so.1 with npm) " +
	"and set masks.sam.library or " + LibraryEnv + " to its path"

// ortEnv guards ONNX Runtime's process-wide environment. onnxruntime_go keeps the
// loaded library and its environment in package-level variables and allows one
// environment per process, so this package must too: it is the one piece of
// package-level mutable state here, and it is only touched under mu. The environment
// is created on the first successful New and kept for the life of the process
// (Close releases sessions, not the library). A failed attempt leaves nothing behind,
// so a later New with a corrected path can succeed.
var ortEnv struct {
	mu      sync.Mutex
	path    string // library loaded, "" when none
	version string
}

// ResolveLibrary returns the library path New would load: configured, else
// $ONNXRUNTIME_LIB. It fails, saying how to get a library, when neither names an
// existing file.
func ResolveLibrary(configured string) (string, error) {
	path, key := configured, "masks.sam.library"
	if path == "" {
		path, key = os.Getenv(LibraryEnv), LibraryEnv
	}
	if path == "" {
		return "", fmt.Errorf("samonnx: no ONNX Runtime library configured (masks.sam.library and %s are empty): %s", LibraryEnv, howToGet)
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("samonnx: ONNX Runtime library %s (from %s): %w; %s", path, key, err, howToGet)
	}
	if st.IsDir() {
		return "", fmt.Errorf("samonnx: ONNX Runtime library %s (from %s) is a directory, not libonnxruntime.so; %s", path, key, howToGet)
	}
	return path, nil
}

// initRuntime loads the library at path and creates the ONNX Runtime environment
// once per process. It returns the runtime's version.
func initRuntime(path string) (string, error) {
	ortEnv.mu.Lock()
	defer ortEnv.mu.Unlock()
	if ortEnv.path != "" {
		if ortEnv.path != path {
			return "", fmt.Errorf("samonnx: ONNX Runtime is already loaded from %s in this process; cannot also load %s (use one masks.sam.library per process)", ortEnv.path, path)
		}
		return ortEnv.version, nil
	}
	if ort.IsInitialized() {
		return "", errors.New("samonnx: ONNX Runtime was initialised outside samonnx in this process")
	}
	ort.SetSharedLibraryPath(path)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		if strings.Contains(err.Error(), "ORT API base") {
			return "", fmt.Errorf("samonnx: ONNX Runtime library %s is too old (need >= %s): %w; %s", path, MinRuntimeVersion, err, howToGet)
		}
		return "", fmt.Errorf("samonnx: loading ONNX Runtime library %s: %w; %s", path, err, howToGet)
	}
	v := ort.GetVersion()
	if !versionAtLeast(v, MinRuntimeVersion) {
		_ = ort.DestroyEnvironment()
		return "", fmt.Errorf("samonnx: ONNX Runtime library %s is version %s, need >= %s; %s", path, v, MinRuntimeVersion, howToGet)
	}
	ortEnv.path, ortEnv.version = path, v
	return v, nil
}
