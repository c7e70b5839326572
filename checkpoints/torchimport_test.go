package checkpoints

import (
	"fmt"
	"strings"
	"testing"

	"github.com/samdiffsr/samdiffsr/checkpoints/torchfile"
)

// refNames is a small reference state dict (names and shapes): RRDB nf 4, nb 2, gc 2
// under "rrdb.", a U-Net of width 4 with dim_mults [1, 3] (only the tensors the size
// inference reads, plus a few more), in the reference's order: U-Net, then RRDB.
func refNames() ([]string, [][]int) {
	var names []string
	var shapes [][]int
	add := func(n string, s ...int) { names, shapes = append(names, n), append(shapes, s) }
	add("denoise_fn.cond_proj.weight", 4, 4, 8, 8)
	add("denoise_fn.mlp.0.weight", 16, 4)
	add("denoise_fn.downs.0.0.block1.block.1.weight", 4, 3, 3, 3)
	add("denoise_fn.downs.1.0.block1.block.1.weight", 12, 4, 3, 3)
	add("denoise_fn.ups.0.2.conv.0.weight", 4, 4, 4, 4)
	add("rrdb.conv_first.weight", 4, 3, 3, 3)
	for b := 0; b < 2; b++ {
		add(fmt.Sprintf("rrdb.RRDB_trunk.%d.RDB1.conv1.weight", b), 2, 4, 3, 3)
	}
	return names, shapes
}

func tensor(shape ...int) *torchfile.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(i%7) * 0.5
	}
	return &torchfile.Tensor{Shape: shape, Data: data}
}

func dict(kv ...any) *torchfile.Dict {
	d := &torchfile.Dict{}
	for i := 0; i < len(kv); i += 2 {
		d.Keys = append(d.Keys, kv[i])
		d.Values = append(d.Values, kv[i+1])
	}
	return d
}

// adamDict is torch.optim.Adam's state_dict for nParams parameters, with state for
// the indices given (shapes from shapes[i]) at step.
func adamDict(nParams int, shapes [][]int, step any, idx ...int) *torchfile.Dict {
	st := &torchfile.Dict{}
	for _, i := range idx {
		st.Keys = append(st.Keys, i)
		st.Values = append(st.Values, dict("step", step, "exp_avg", tensor(shapes[i]...), "exp_avg_sq", tensor(shapes[i]...)))
	}
	params := make([]any, nParams)
	for i := range params {
		params[i] = i
	}
	group := dict("lr", 2e-4, "betas", []any{0.9, 0.999}, "eps", 1e-8, "weight_decay", 0, "amsgrad", false, "params", params)
	return dict("state", st, "param_groups", []any{group})
}

func TestFromTorchReferenceLayout(t *testing.T) {
	names, shapes := refNames()
	sd := dict("betas", tensor(100), "alphas_cumprod", tensor(100))
	for i, n := range names {
		sd.Keys = append(sd.Keys, n)
		sd.Values = append(sd.Values, tensor(shapes[i]...))
	}
	// The reference: Adam over all parameters; only the U-Net's (0..4) have state.
	stepTensor := &torchfile.Tensor{Shape: nil, Data: []float32{12}}
	root := dict("global_step", 12, "state_dict", dict("model", sd), "optimizer_states", []any{adamDict(len(names), shapes, stepTensor, 0, 1, 2, 3, 4)})
	ti, err := fromTorch(&torchfile.File{Format: torchfile.FormatLegacy, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if ti.Layout != "state_dict.model" || ti.Stage != "diffusion" || ti.GlobalStep != 12 || len(ti.Buffers) != 2 || len(ti.Model) != len(names) {
		t.Errorf("layout %s stage %s step %d buffers %d model %d", ti.Layout, ti.Stage, ti.GlobalStep, len(ti.Buffers), len(ti.Model))
	}
	s := ti.Sizes
	if s.NF != 4 || s.NB != 2 || s.GC != 2 || s.Dim != 4 || fmt.Sprint(s.DimMults) != "[1 3]" {
		t.Errorf("sizes %+v", s)
	}
	if strings.Join(ti.Order, ",") != strings.Join(names, ",") {
		t.Errorf("order %v", ti.Order)
	}
	a := ti.Adam
	if a == nil || a.Step != 12 || a.Beta2 != 0.999 || a.LR != 2e-4 || len(a.Moments) != 10 {
		t.Fatalf("adam %+v", a)
	}
	if m := a.Moments["denoise_fn.downs.1.0.block1.block.1.weight.exp_avg_sq"]; fmt.Sprint(m.Shape) != "[12 4 3 3]" {
		t.Errorf("moment shape %v", m.Shape)
	}

	// An optimizer over the U-Net alone maps its indices to the U-Net's parameters.
	root = dict("state_dict", dict("model", sd), "optimizer_states", []any{adamDict(5, shapes, 3, 0, 4)})
	if ti, err = fromTorch(&torchfile.File{Root: root}); err != nil || ti.Adam.Step != 3 || len(ti.Adam.Moments) != 4 {
		t.Errorf("U-Net-only optimizer: %v %+v", err, ti)
	}
}

func TestFromTorchLayouts(t *testing.T) {
	names, shapes := refNames()
	bare := &torchfile.Dict{}
	rrdbOnly := &torchfile.Dict{}
	for i, n := range names {
		bare.Keys = append(bare.Keys, "module."+n)
		bare.Values = append(bare.Values, tensor(shapes[i]...))
		if r, ok := strings.CutPrefix(n, "rrdb."); ok {
			rrdbOnly.Keys = append(rrdbOnly.Keys, r)
			rrdbOnly.Values = append(rrdbOnly.Values, tensor(shapes[i]...))
		}
	}
	ti, err := fromTorch(&torchfile.File{Root: bare})
	if err != nil || ti.Layout != "bare" || ti.StrippedPrefix != "module." || ti.Adam != nil || ti.GlobalStep != -1 {
		t.Fatalf("bare: %v %+v", err, ti)
	}
	if _, ok := ti.Model["denoise_fn.cond_proj.weight"]; !ok {
		t.Error("bare: prefix not removed")
	}
	ti, err = fromTorch(&torchfile.File{Root: dict("state_dict", dict("model", rrdbOnly))})
	if err != nil || ti.Stage != "rrdb" || ti.Sizes.NB != 2 || ti.Sizes.Dim != 0 {
		t.Fatalf("rrdb only: %v %+v", err, ti)
	}
	if _, ok := ti.Model["rrdb.conv_first.weight"]; !ok || len(ti.Model) != 3 {
		t.Errorf("rrdb only: names %v", ti.Order)
	}
}

func TestFromTorchErrors(t *testing.T) {
	names, shapes := refNames()
	sd := func(skip string) *torchfile.Dict {
		d := &torchfile.Dict{}
		for i, n := range names {
			if n != skip {
				d.Keys = append(d.Keys, n)
				d.Values = append(d.Values, tensor(shapes[i]...))
			}
		}
		return d
	}
	badStep := adamDict(len(names), shapes, 3, 0, 1)
	badStep.Values[0].(*torchfile.Dict).Values[1].(*torchfile.Dict).Values[0] = 4
	wrongOrder := adamDict(len(names), shapes, 3, 0)
	wrongOrder.Values[0].(*torchfile.Dict).Keys[0] = 1 // index 1's moments have index 0's shape
	amsgrad := adamDict(len(names), shapes, 3, 0)
	st0 := amsgrad.Values[0].(*torchfile.Dict).Values[0].(*torchfile.Dict)
	st0.Keys, st0.Values = append(st0.Keys, "max_exp_avg_sq"), append(st0.Values, tensor(1))
	for _, c := range []struct {
		name string
		root any
		want string
	}{
		{"not a dict", []any{1}, "not a dict"},
		{"no state dict", dict("epoch", 3, "foo", "bar"), "keys are epoch, foo"},
		{"non-tensor entry", dict("state_dict", dict("model", dict("a", tensor(1), "b", 3))), `"b" is int`},
		{"missing size key", dict("state_dict", dict("model", sd("rrdb.conv_first.weight"))), `lacks "rrdb.conv_first.weight"`},
		{"gap in blocks", dict("state_dict", dict("model", sd("rrdb.RRDB_trunk.0.RDB1.conv1.weight"))), "rrdb.RRDB_trunk.0.RDB1.conv1.weight"},
		{"param count", dict("state_dict", dict("model", sd("")), "optimizer_states", []any{adamDict(3, shapes, 1)}), "optimizer has 3 parameters"},
		{"steps differ", dict("state_dict", dict("model", sd("")), "optimizer_states", []any{badStep}), "different Adam steps"},
		{"order", dict("state_dict", dict("model", sd("")), "optimizer_states", []any{wrongOrder}), "parameter order"},
		{"amsgrad", dict("state_dict", dict("model", sd("")), "optimizer_states", []any{amsgrad}), "AMSGrad"},
		{"global step", dict("state_dict", dict("model", sd("")), "global_step", "x"), "global_step"},
	} {
		_, err := fromTorch(&torchfile.File{Root: c.root})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one containing %q", c.name, err, c.want)
		}
	}
}
