package main

import (
	"strings"
	"testing"
)

// A farm worker configured for sam-onnx with a missing model file must fail at start-up,
// before it connects to NATS or takes a task, naming the config key and the path.
func TestWorkerSAMMissingModelFailsAtStartup(t *testing.T) {
	t.Setenv("SAMDIFFSR_MASKS_SEGMENTER", "sam-onnx")
	t.Setenv("SAMDIFFSR_MASKS_SAM_ENCODER", "/nonexistent/sam_encoder.onnx")
	t.Setenv("SAMDIFFSR_MASKS_SAM_DECODER", "/nonexistent/sam_decoder.onnx")
	// Port 1 on loopback: nothing listens there, so reaching NATS would fail differently.
	_, errs, code := runCLI(t, "worker", "--nats", "nats://127.0.0.1:1", "--roles", "mask")
	if code != 2 || !strings.Contains(errs, "masks.sam.encoder") || !strings.Contains(errs, "/nonexistent/sam_encoder.onnx") {
		t.Fatalf("exit %d, stderr %q: want exit 2 naming masks.sam.encoder and its path", code, errs)
	}
	if strings.Contains(errs, "nats:") {
		t.Fatalf("worker reached NATS before checking its segmenter: %q", errs)
	}
}
