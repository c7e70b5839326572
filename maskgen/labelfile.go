package maskgen

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/internal/imagefile"
)

// SidecarFormat identifies the label-map sidecar format in Sidecar.Format.
const SidecarFormat = "samdiffsr-labelmap/1"

// Sidecar is the JSON file written beside a label-map PNG (same name, .json): what
// made the label map and from which image. It is written after the PNG, so a sidecar
// that names the PNG's SHA-256 marks a complete pair.
type Sidecar struct {
	// Format is SidecarFormat.
	Format string `json:"format"`
	// Segmenter is the Segmenter's Name ("builtin", "sam-onnx").
	Segmenter string `json:"segmenter"`
	// Params are the Segmenter's Params.
	Params map[string]any `json:"params,omitempty"`
	// Regions is the number of regions (largest region id).
	Regions int `json:"regions"`
	// Width and Height are the label map's (and source image's) size.
	Width  int `json:"width"`
	Height int `json:"height"`
	// Source names the source image (its dataset ID), for people reading the file.
	Source string `json:"source,omitempty"`
	// SourceSHA256 is the hex SHA-256 of the source image file's bytes.
	SourceSHA256 string `json:"source_sha256"`
	// LabelsSHA256 is the hex SHA-256 of the label-map PNG's bytes.
	LabelsSHA256 string `json:"labels_sha256,omitempty"`
}

// SidecarPath returns the sidecar path of a label-map file: path with its extension replaced by .json.
func SidecarPath(path string) string {
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".json"
}

// SHA256Hex returns the hex SHA-256 of data.
func SHA256Hex(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// EncodeLabelMapPNG encodes m as a 16-bit grayscale PNG (one region id per pixel).
// The bytes are a deterministic function of m.
func EncodeLabelMapPNG(m *LabelMap) ([]byte, error) {
	if m == nil {
		return nil, errors.New("maskgen: encode label map: nil map")
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("maskgen: encode label map: %w", err)
	}
	img := image.NewGray16(image.Rect(0, 0, m.Width, m.Height))
	for i, l := range m.Labels {
		img.Pix[2*i] = byte(l >> 8)
		img.Pix[2*i+1] = byte(l)
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("maskgen: encode label map PNG: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodeLabelMapPNG decodes a label map written by EncodeLabelMapPNG (16-bit grayscale;
// 8-bit grayscale is accepted too). Regions is set to the largest label found.
func DecodeLabelMapPNG(data []byte) (*LabelMap, error) {
	img, _, err := imagefile.Decode(bytes.NewReader(data), "label map", 0)
	if err != nil {
		return nil, fmt.Errorf("maskgen: decode label map PNG: %w (the file is not a complete PNG; regenerate it with samdiffsr masks)", err)
	}
	b := img.Bounds()
	m := NewLabelMap(b.Dx(), b.Dy())
	switch g := img.(type) {
	case *image.Gray16:
		for y := 0; y < m.Height; y++ {
			row := g.Pix[y*g.Stride : y*g.Stride+2*m.Width]
			out := m.Labels[y*m.Width : (y+1)*m.Width]
			for x := range out {
				out[x] = uint16(row[2*x])<<8 | uint16(row[2*x+1])
			}
		}
	case *image.Gray:
		for y := 0; y < m.Height; y++ {
			row := g.Pix[y*g.Stride : y*g.Stride+m.Width]
			out := m.Labels[y*m.Width : (y+1)*m.Width]
			for x := range out {
				out[x] = uint16(row[x])
			}
		}
	default:
		return nil, fmt.Errorf("maskgen: label map PNG is %T, want 16-bit grayscale (a label map written by samdiffsr masks)", img)
	}
	for _, l := range m.Labels {
		if int(l) > m.Regions {
			m.Regions = int(l)
		}
	}
	return m, nil
}

// WriteLabelMap writes m to path as a 16-bit grayscale PNG and sc to SidecarPath(path),
// each atomically (temporary file, fsync, rename), PNG first. sc's Format, Regions,
// Width, Height and LabelsSHA256 are filled in from m; sc may be nil.
func WriteLabelMap(path string, m *LabelMap, sc *Sidecar) error {
	data, err := EncodeLabelMapPNG(m)
	if err != nil {
		return fmt.Errorf("%w (writing %s)", err, path)
	}
	var s Sidecar
	if sc != nil {
		s = *sc
	}
	s.Format = SidecarFormat
	s.Regions, s.Width, s.Height = m.Regions, m.Width, m.Height
	s.LabelsSHA256 = SHA256Hex(data)
	js, err := MarshalSidecar(&s)
	if err != nil {
		return fmt.Errorf("maskgen: sidecar for %s: %w", path, err)
	}
	return WriteLabelMapFiles(path, data, js)
}

// WriteLabelMapFiles writes already encoded label-map PNG bytes to path and sidecar JSON
// bytes to SidecarPath(path), atomically, PNG first (the sidecar marks completion).
func WriteLabelMapFiles(path string, pngData, sidecarJSON []byte) error {
	if err := fsutil.WriteFileAtomic(path, pngData, 0o644); err != nil {
		return fmt.Errorf("maskgen: write label map: %w (check that the output folder is writable)", err)
	}
	if err := fsutil.WriteFileAtomic(SidecarPath(path), sidecarJSON, 0o644); err != nil {
		return fmt.Errorf("maskgen: write label-map sidecar: %w (check that the output folder is writable)", err)
	}
	return nil
}

// MarshalSidecar encodes sc as indented JSON with a trailing newline (deterministic:
// map keys are sorted).
func MarshalSidecar(sc *Sidecar) ([]byte, error) {
	js, err := json.MarshalIndent(sc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(js, '\n'), nil
}

// UnmarshalSidecar decodes a sidecar and checks its format.
func UnmarshalSidecar(data []byte) (*Sidecar, error) {
	var sc Sidecar
	if err := json.Unmarshal(data, &sc); err != nil {
		return nil, fmt.Errorf("maskgen: sidecar is not valid JSON: %w", err)
	}
	if sc.Format != SidecarFormat {
		return nil, fmt.Errorf("maskgen: sidecar format %q, want %q", sc.Format, SidecarFormat)
	}
	return &sc, nil
}

// ReadSidecar reads the sidecar of the label map at path (SidecarPath(path)).
func ReadSidecar(path string) (*Sidecar, error) {
	sp := SidecarPath(path)
	data, err := os.ReadFile(sp)
	if err != nil {
		return nil, fmt.Errorf("maskgen: read label-map sidecar %s: %w (regenerate the masks with samdiffsr masks)", sp, err)
	}
	sc, err := UnmarshalSidecar(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (regenerate the masks with samdiffsr masks)", sp, err)
	}
	return sc, nil
}

// ReadLabelMap reads the label-map PNG at path and its sidecar, and checks that they
// agree (size, region count, PNG checksum). A missing sidecar is an error wrapping
// fs.ErrNotExist.
func ReadLabelMap(path string) (*LabelMap, *Sidecar, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("maskgen: read label map %s: %w (generate masks with samdiffsr masks, or set masks.dir)", path, err)
	}
	sc, err := ReadSidecar(path)
	if err != nil {
		return nil, nil, err
	}
	if sc.LabelsSHA256 != "" && sc.LabelsSHA256 != SHA256Hex(data) {
		return nil, nil, fmt.Errorf("maskgen: label map %s does not match its sidecar's checksum (the pair is from different runs); delete both and re-run samdiffsr masks", path)
	}
	m, err := DecodeLabelMapPNG(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if m.Width != sc.Width || m.Height != sc.Height {
		return nil, nil, fmt.Errorf("maskgen: label map %s is %dx%d but its sidecar says %dx%d; delete both and re-run samdiffsr masks", path, m.Width, m.Height, sc.Width, sc.Height)
	}
	if m.Regions > sc.Regions {
		return nil, nil, fmt.Errorf("maskgen: label map %s has label %d but its sidecar says %d regions; delete both and re-run samdiffsr masks", path, m.Regions, sc.Regions)
	}
	m.Regions = sc.Regions
	return m, sc, nil
}

// LabelMapExists reports whether both files of the label map at path exist.
func LabelMapExists(path string) bool {
	for _, p := range []string{path, SidecarPath(path)} {
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}
