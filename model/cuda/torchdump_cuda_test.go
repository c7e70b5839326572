//go:build cuda

package cuda

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"testing"

	"github.com/samdiffsr/samdiffsr/model"
)

// writeSafetensors writes float32 tensors as a safetensors file (8-byte header
// length, JSON header, data), the format scripts/torch_unet.py reads.
func writeSafetensors(path string, names []string, shapes map[string][]int, data map[string][]float32) error {
	type entry struct {
		DType   string `json:"dtype"`
		Shape   []int  `json:"shape"`
		Offsets [2]int `json:"data_offsets"`
	}
	hdr := map[string]any{}
	off := 0
	sort.Strings(names)
	for _, n := range names {
		k := 4 * len(data[n])
		hdr[n] = entry{DType: "F32", Shape: shapes[n], Offsets: [2]int{off, off + k}}
		off += k
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	buf := make([]byte, 8, 8+len(h)+off)
	binary.LittleEndian.PutUint64(buf, uint64(len(h)))
	buf = append(buf, h...)
	for _, n := range names {
		for _, v := range data[n] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
	}
	return os.WriteFile(path, buf, 0o644)
}

// TestTorchDump (only with SAMDIFFSR_TORCH_DUMP=FILE) runs one device training
// step of a small model and writes FILE: the U-Net parameters under their
// state-dict names, the step's inputs (xt, t, cond = the selected RRDB features,
// target) and our loss and gradients ("grad/<name>"), for
// `scripts/torch_unet.py --check FILE` to recompute with PyTorch.
func TestTorchDump(t *testing.T) {
	path := os.Getenv("SAMDIFFSR_TORCH_DUMP")
	if path == "" {
		t.Skip("SAMDIFFSR_TORCH_DUMP not set")
	}
	d := device(t)
	cfg := tinyConfig()
	cfg.Model.UNet.Dim = 16
	m, err := model.New(cfg, 11)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(d, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	const n, H, W = 2, 32, 32
	b, ts, noise := batch(rng, m, n, H, W)
	loss, err := tr.DiffusionLoss(b, ts, noise)
	if err != nil {
		t.Fatal(err)
	}
	grads := make([]float32, len(m.UNetGrads()))
	if err := tr.Grads(grads); err != nil {
		t.Fatal(err)
	}
	cc := tr.rrdb.condChannels()
	h, w := H/tr.scale, W/tr.scale
	cond := make([]float32, n*cc*h*w)
	if err := d.Download(cond, tr.bufs.cond); err != nil {
		t.Fatal(err)
	}
	names := []string{}
	shapes := map[string][]int{}
	data := map[string][]float32{}
	add := func(name string, shape []int, v []float32) {
		names = append(names, name)
		shapes[name] = shape
		data[name] = v
	}
	off := 0
	for _, p := range m.UNetParams() {
		add(p.Name, p.Shape, p.Data)
		add("grad/"+p.Name, p.Shape, grads[off:off+len(p.Data)])
		off += len(p.Data)
	}
	tf := make([]float32, n)
	for i, v := range ts {
		tf[i] = float32(v)
	}
	add("in/xt", []int{n, 3, H, W}, append([]float32(nil), tr.xt...))
	add("in/target", []int{n, 3, H, W}, append([]float32(nil), tr.target...))
	add("in/t", []int{n}, tf)
	add("in/cond", []int{n, cc, h, w}, cond)
	add("out/loss", []int{1}, []float32{loss})
	if err := writeSafetensors(path, names, shapes, data); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (loss %.6f)", path, loss)
}
