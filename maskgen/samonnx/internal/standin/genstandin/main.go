// Command genstandin writes the stand-in SAM encoder and decoder ONNX models used by
// the samonnx tests. Run it through `go generate ./maskgen/samonnx/`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/samdiffsr/samdiffsr/maskgen/samonnx/internal/standin"
)

func main() {
	out := flag.String("o", "testdata", "output directory")
	flag.Parse()
	files := map[string][]byte{
		"standin_encoder.onnx":         standin.Encoder(),
		"standin_decoder.onnx":         standin.Decoder(false),
		"standin_decoder_batched.onnx": standin.Decoder(true),
	}
	for name, b := range files {
		path := filepath.Join(*out, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "genstandin: %v\n", err)
			os.Exit(1)
		}
	}
}
