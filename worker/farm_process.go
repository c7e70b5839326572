package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	_ "image/jpeg" // decoders for mask tasks
	_ "image/png"
	"os"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

// NewFarmProcess returns the FarmProcess that segments one image with seg: read the
// file (its SHA-256 checked against the manifest by the caller), decode, segment,
// encode the 16-bit label map and its sidecar.
func NewFarmProcess(seg maskgen.Segmenter) FarmProcess {
	return func(ctx context.Context, imageID, path string) (*FarmOutput, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read image: %w", err)
		}
		sum := sha256.Sum256(data)
		img, _, err := image.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w (the file is not a readable PNG/JPEG; replace or remove it)", path, err)
		}
		lm, err := seg.Segment(ctx, img)
		if err != nil {
			return nil, fmt.Errorf("segment %s: %w", path, err)
		}
		pngData, err := maskgen.EncodeLabelMapPNG(lm)
		if err != nil {
			return nil, err
		}
		sc := &maskgen.Sidecar{Format: maskgen.SidecarFormat, Segmenter: seg.Name(), Params: seg.Params(), Regions: lm.Regions,
			Width: lm.Width, Height: lm.Height, Source: imageID, SourceSHA256: hex.EncodeToString(sum[:]), LabelsSHA256: maskgen.SHA256Hex(pngData)}
		scData, err := maskgen.MarshalSidecar(sc)
		if err != nil {
			return nil, err
		}
		return &FarmOutput{ImageSHA256: sc.SourceSHA256, Regions: lm.Regions, PNG: pngData, Sidecar: scData}, nil
	}
}
