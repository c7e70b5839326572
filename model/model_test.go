package model

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/samdiffsr/samdiffsr/configs"
)

func tinyConfig(mod string) configs.Config {
	var c configs.Config
	c.Data.Scale = 4
	c.Model.RRDB = configs.RRDB{NF: 4, NB: 2, GC: 3}
	c.Model.UNet = configs.UNet{Dim: 8, DimMults: []int{1, 2, 2}}
	c.Diffusion = configs.Diffusion{Timesteps: 100, BetaSchedule: "cosine", BetaS: 0.008, Modulation: mod}
	return c
}

func tinyBatch(rng *rand.Rand, n, h, w int) *Batch {
	b := &Batch{N: n, H: h, W: w}
	b.HR = randSlice(rng, n*3*h*w, 0.5)
	b.Up = make([]float32, len(b.HR))
	for i := range b.Up {
		b.Up[i] = b.HR[i] + float32(rng.NormFloat64()*0.1)
	}
	b.LR = randSlice(rng, n*3*h*w/16, 0.5)
	b.E = randSlice(rng, n*h*w, 0.7)
	return b
}

// TestUNetGradientFD checks every U-Net parameter tensor (a few coordinates each) of a
// tiny full U-Net, conditioned on tiny RRDB features, by finite differences of
// <ε_θ(x_t, LR, t), r>.
func TestUNetGradientFD(t *testing.T) {
	m, err := New(tinyConfig("paper"), 3)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(21, 22))
	n, h, w := 2, 16, 16
	b := tinyBatch(rng, n, h, w)
	cond := m.features(b.LR, n, h/4, w/4, false)
	xt := newAct(randSlice(rng, n*3*h*w, 1), n, 3, h, w)
	ts := []int{7, 63}
	r := randSlice(rng, n*3*h*w, 1)
	f := func() float64 { return dot(m.unet.forward(xt, ts, cond, false).data, r) }
	f()
	zeroGrads(m.UNetParams())
	m.unet.backward(newAct(append([]float32(nil), r...), n, 3, h, w))
	for _, p := range m.UNetParams() {
		fdCheck(t, p.Name, rng, p.Data, p.Grad, f, 3, 1e-2, 1e-2)
	}
}

// TestRRDBGradientFD checks every RRDB parameter tensor of a tiny RRDB (SR head
// included) by finite differences of <RRDB(LR), r>.
func TestRRDBGradientFD(t *testing.T) {
	m, err := New(tinyConfig("paper"), 4)
	if err != nil {
		t.Fatal(err)
	}
	// Shift conv_last's bias so most outputs sit inside the clamp's [0,1] range.
	for i := range m.rrdb.last.b.Data {
		m.rrdb.last.b.Data[i] = 0.5
	}
	rng := rand.New(rand.NewPCG(23, 24))
	n, h, w := 2, 3, 4
	lr := randSlice(rng, n*3*h*w, 0.5)
	r := randSlice(rng, n*3*16*h*w, 1)
	f := func() float64 {
		m.features(lr, n, h, w, true)
		return dot(m.rrdb.head().data, r)
	}
	f()
	zeroGrads(m.RRDBParams())
	m.rrdb.backward(newAct(append([]float32(nil), r...), n, 3, 4*h, 4*w))
	// LeakyReLU kinks make large steps inexact: use a small one.
	for _, p := range m.RRDBParams() {
		fdCheck(t, p.Name, rng, p.Data, p.Grad, f, 3, 3e-4, 2e-2)
	}
}

// TestLossGradientsFD checks the full DiffusionLoss and RRDBLoss gradients (L1 on
// top) at a few coordinates.
func TestLossGradientsFD(t *testing.T) {
	for _, mod := range []string{"paper", "reference", "none"} {
		m, err := New(tinyConfig(mod), 5)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(25, 26))
		b := tinyBatch(rng, 2, 8, 8)
		ts := []int{3, 88}
		noise := randSlice(rng, 2*3*64, 1)
		f := func() float64 {
			l, err := m.DiffusionLoss(b, ts, noise)
			if err != nil {
				t.Fatal(err)
			}
			return float64(l)
		}
		f()
		grads := make([][]float32, 0)
		for _, p := range m.UNetParams() {
			grads = append(grads, append([]float32(nil), p.Grad...))
		}
		for i, p := range m.UNetParams() {
			if i%4 == 0 {
				fdCheck(t, mod+" "+p.Name, rng, p.Data, grads[i], f, 2, 1e-3, 3e-2)
			}
		}
	}
	m, _ := New(tinyConfig("paper"), 6)
	rng := rand.New(rand.NewPCG(27, 28))
	b := tinyBatch(rng, 2, 8, 8)
	for i := range m.rrdb.last.b.Data {
		m.rrdb.last.b.Data[i] = 0.5
	}
	f := func() float64 {
		l, err := m.RRDBLoss(b)
		if err != nil {
			t.Fatal(err)
		}
		return float64(l)
	}
	f()
	var grads [][]float32
	for _, p := range m.RRDBParams() {
		grads = append(grads, append([]float32(nil), p.Grad...))
	}
	for i, p := range m.RRDBParams() {
		if i%3 == 0 {
			fdCheck(t, "rrdb loss "+p.Name, rng, p.Data, grads[i], f, 2, 1e-3, 3e-2)
		}
	}
}

// TestDeterminism checks that two models from the same seed give bit-identical
// losses and gradients for the same batch, and that a repeated call on the same
// model does too (buffers reused across steps).
func TestDeterminism(t *testing.T) {
	run := func(m *SRDiff) (float32, [][]float32) {
		rng := rand.New(rand.NewPCG(31, 32))
		b := tinyBatch(rng, 3, 16, 16)
		noise := randSlice(rng, 3*3*256, 1)
		l, err := m.DiffusionLoss(b, []int{0, 50, 99}, noise)
		if err != nil {
			t.Fatal(err)
		}
		var g [][]float32
		for _, p := range m.UNetParams() {
			g = append(g, append([]float32(nil), p.Grad...))
		}
		return l, g
	}
	m1, _ := New(tinyConfig("paper"), 9)
	m2, _ := New(tinyConfig("paper"), 9)
	l1, g1 := run(m1)
	l2, g2 := run(m2)
	l3, g3 := run(m1)
	if l1 != l2 || l1 != l3 {
		t.Fatalf("losses differ: %v %v %v", l1, l2, l3)
	}
	for i := range g1 {
		for j := range g1[i] {
			if g1[i][j] != g2[i][j] || g1[i][j] != g3[i][j] {
				t.Fatalf("gradient %s[%d] differs: %v %v %v", m1.UNetParams()[i].Name, j, g1[i][j], g2[i][j], g3[i][j])
			}
		}
	}
	m3, _ := New(tinyConfig("paper"), 10)
	if m3.UNetParams()[0].Data[0] == m1.UNetParams()[0].Data[0] {
		t.Error("different seeds gave the same initial weights")
	}
}

// TestOverfit trains a tiny U-Net on one fixed batch (fixed t and noise) with Adam
// and expects the loss to fall by at least half.
func TestOverfit(t *testing.T) {
	c := tinyConfig("paper")
	c.Model.UNet = configs.UNet{Dim: 16, DimMults: []int{1, 2}}
	m, err := New(c, 11)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(33, 34))
	b := tinyBatch(rng, 4, 16, 16)
	ts := []int{5, 30, 60, 90}
	noise := randSlice(rng, 4*3*256, 1)
	opt := NewAdam()
	var first, last float32
	for step := 0; step < 300; step++ {
		l, err := m.DiffusionLoss(b, ts, noise)
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = l
		}
		last = l
		if err := opt.Step(m.UNetParams(), 2e-3); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("loss %.4f -> %.4f after 300 steps", first, last)
	if last > 0.5*first {
		t.Errorf("loss fell from %.4f to %.4f, want at least a 50%% drop", first, last)
	}
}

func TestRRDBOverfit(t *testing.T) {
	m, err := New(tinyConfig("paper"), 12)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(35, 36))
	b := tinyBatch(rng, 2, 16, 16)
	opt := NewAdam()
	var first, last float32
	for step := 0; step < 150; step++ {
		l, err := m.RRDBLoss(b)
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = l
		}
		last = l
		if err := opt.Step(m.RRDBParams(), 2e-3); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("rrdb loss %.4f -> %.4f", first, last)
	if last > 0.8*first {
		t.Errorf("rrdb loss fell from %.4f to %.4f only", first, last)
	}
}

func TestSample(t *testing.T) {
	m, err := New(tinyConfig("paper"), 13)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(37, 38))
	n, h, w := 2, 16, 8
	lr := randSlice(rng, n*3*h*w/16, 0.5)
	up := randSlice(rng, n*3*h*w, 0.5)
	var steps []int
	out, err := m.Sample(context.Background(), lr, up, n, h, w, rand.New(rand.NewPCG(1, 2)), func(t int) { steps = append(steps, t) })
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 100 || steps[0] != 99 || steps[99] != 0 {
		t.Errorf("onStep saw %d steps from %v to %v, want 99..0", len(steps), steps[0], steps[len(steps)-1])
	}
	for _, v := range out {
		if v < -1 || v > 1 || math.IsNaN(float64(v)) {
			t.Fatalf("sample value %v outside [-1,1]", v)
		}
	}
	out2, _ := m.Sample(context.Background(), lr, up, n, h, w, rand.New(rand.NewPCG(1, 2)), nil)
	for i := range out {
		if out[i] != out2[i] {
			t.Fatal("sampling is not deterministic for a fixed random source")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Sample(ctx, lr, up, n, h, w, rand.New(rand.NewPCG(1, 2)), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Sample returned %v", err)
	}
	if _, err := m.Sample(context.Background(), lr, up, n, 12, 8, rand.New(rand.NewPCG(1, 2)), nil); err == nil {
		t.Error("Sample accepted a height that is not a multiple of 8")
	}
	sr, err := m.RRDBForward(lr, n, h/4, w/4)
	if err != nil || len(sr) != n*3*h*w {
		t.Fatalf("RRDBForward: %d values, %v", len(sr), err)
	}
}

// TestAdamMatchesFormula checks two Adam steps against PyTorch's update written out
// in float64, and the export/import of its state.
func TestAdamMatchesFormula(t *testing.T) {
	p := &Param{Name: "w", Shape: []int{3}, Data: []float32{0.5, -1, 2}, Grad: make([]float32, 3)}
	ref := []float64{0.5, -1, 2}
	mom, vel := make([]float64, 3), make([]float64, 3)
	opt := NewAdam()
	lr := 0.01
	for step := 1; step <= 3; step++ {
		g := []float64{0.1 * float64(step), -0.3, 1e-3}
		for i := range g {
			p.Grad[i] = float32(g[i])
			mom[i] = 0.9*mom[i] + 0.1*g[i]
			vel[i] = 0.999*vel[i] + 0.001*g[i]*g[i]
			bc1 := 1 - math.Pow(0.9, float64(step))
			bc2 := 1 - math.Pow(0.999, float64(step))
			ref[i] -= lr / bc1 * mom[i] / (math.Sqrt(vel[i])/math.Sqrt(bc2) + 1e-8)
		}
		if err := opt.Step([]*Param{p}, lr); err != nil {
			t.Fatal(err)
		}
	}
	for i := range ref {
		if math.Abs(float64(p.Data[i])-ref[i]) > 1e-6 {
			t.Errorf("param[%d] = %.8g, want %.8g", i, p.Data[i], ref[i])
		}
	}
	step, ts := opt.State([]*Param{p})
	if step != 3 || len(ts) != 2 || ts[0].Name != "w.exp_avg" || ts[1].Name != "w.exp_avg_sq" {
		t.Fatalf("state: step %d, %d tensors", step, len(ts))
	}
	opt2 := NewAdam()
	if err := opt2.Load([]*Param{p}, step, ts); err != nil {
		t.Fatal(err)
	}
	q := &Param{Name: "w", Shape: []int{3}, Data: append([]float32(nil), p.Data...), Grad: []float32{1, 1, 1}}
	copy(p.Grad, q.Grad)
	_ = opt.Step([]*Param{p}, lr)
	_ = opt2.Step([]*Param{q}, lr)
	for i := range p.Data {
		if p.Data[i] != q.Data[i] {
			t.Fatal("restored Adam state does not continue identically")
		}
	}
	if err := opt2.Load([]*Param{p}, 1, ts[:1]); err == nil {
		t.Error("Load accepted state without exp_avg_sq")
	}
}

func TestLoadWeights(t *testing.T) {
	m1, _ := New(tinyConfig("paper"), 1)
	m2, _ := New(tinyConfig("paper"), 2)
	var ts []Tensor
	for _, p := range m1.RRDBParams() {
		ts = append(ts, Tensor{Name: p.Name, Shape: p.Shape, Data: p.Data})
	}
	if err := m2.LoadWeights(ts, false); err == nil {
		t.Error("strict load of an RRDB-only checkpoint succeeded")
	}
	if err := m2.LoadWeights(ts, true); err != nil {
		t.Fatal(err)
	}
	if m2.RRDBParams()[0].Data[0] != m1.RRDBParams()[0].Data[0] {
		t.Error("weights not copied")
	}
	bad := []Tensor{{Name: ts[0].Name, Shape: []int{1}, Data: []float32{0}}}
	if err := m2.LoadWeights(bad, true); err == nil {
		t.Error("shape mismatch accepted")
	}
}

func TestContiguousGrads(t *testing.T) {
	m, _ := New(tinyConfig("paper"), 1)
	for _, c := range []struct {
		ps         []*Param
		data, grad []float32
	}{{m.UNetParams(), m.UNetValues(), m.UNetGrads()}, {m.RRDBParams(), m.RRDBValues(), m.RRDBGrads()}} {
		off := 0
		for _, p := range c.ps {
			if &p.Data[0] != &c.data[off] || &p.Grad[0] != &c.grad[off] {
				t.Fatalf("%s is not at offset %d of the slabs", p.Name, off)
			}
			off += p.Size()
		}
		if off != len(c.grad) || off != len(c.data) {
			t.Fatalf("slabs hold %d values, params %d", len(c.grad), off)
		}
	}
}
