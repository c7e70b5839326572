//go:build cuda

package cuda

import (
	"fmt"

	"github.com/samdiffsr/samdiffsr/model"
)

// The explicit U-Net (and the frozen RRDB's conditioning features) on device
// buffers: the layers of model/layers.go, model/unet.go and model/rrdb.go with the
// same parameters (one contiguous slab in model's Params order), batched over the
// images of a batch (im2col of several images at once, strided-batched SGEMM with
// the weights shared), activations kept for backward.

// dact is an N×C×H×W activation whose sample i starts at element i·stride of b.
type dact struct {
	b          Buf
	n, c, h, w int
	stride     int
}

func newDact(b Buf, n, c, h, w int) dact {
	return dact{b: Buf{Ptr: b.Ptr, N: n * c * h * w}, n: n, c: c, h: h, w: w, stride: c * h * w}
}

func (a dact) hw() int          { return a.h * a.w }
func (a dact) size() int        { return a.c * a.h * a.w }
func (a dact) contiguous() bool { return a.stride == a.size() }
func (a dact) sample(i int) Buf { return a.b.Off(i * a.stride) }
func (a dact) channels(from, c int) dact {
	return dact{b: a.b.Off(from * a.hw()), n: a.n, c: c, h: a.h, w: a.w, stride: a.stride}
}

// net holds what the layers of one network share: the device, the parameter and
// gradient slabs with the offsets of the parameters by name, the im2col
// workspace and a sticky error (the first failed launch; later calls are no-ops
// as far as correctness goes, and the error is reported at the end of a step).
type net struct {
	d           *Device
	vals, grads Buf
	off         map[string]int
	size        map[string]int
	col, part   Buf
	wpart       Buf // per-image weight-gradient partials
	colLimit    int // floats of im2col workspace per chunk of images
	err         error
}

func newNet(d *Device, params []*model.Param) (*net, error) {
	nt := &net{d: d, off: map[string]int{}, size: map[string]int{}, colLimit: 1 << 28}
	n := 0
	for _, p := range params {
		nt.off[p.Name] = n
		nt.size[p.Name] = len(p.Data)
		n += len(p.Data)
	}
	var err error
	if nt.vals, err = d.Alloc(n); err != nil {
		return nil, err
	}
	if nt.grads, err = d.Alloc(n); err != nil {
		return nil, err
	}
	return nt, nil
}

func (nt *net) ck(err error) {
	if err != nil && nt.err == nil {
		nt.err = err
	}
}

// param returns the value and gradient views of parameter name with want elements.
func (nt *net) param(name string, want int) (Buf, Buf) {
	o, ok := nt.off[name]
	if !ok || nt.size[name] != want {
		nt.ck(fmt.Errorf("cuda: parameter %q: have %d values, want %d", name, nt.size[name], want))
		return Buf{}, Buf{}
	}
	return Buf{Ptr: nt.vals.Ptr + Ptr(4*o), N: want}, Buf{Ptr: nt.grads.Ptr + Ptr(4*o), N: want}
}

// grow returns (*p)[:n], reallocating when *p is smaller.
func (nt *net) grow(p *Buf, n int) Buf {
	if p.N >= n && p.Ptr != 0 {
		return Buf{Ptr: p.Ptr, N: n}
	}
	if p.Ptr != 0 {
		nt.d.Free(*p)
	}
	b, err := nt.d.Alloc(n)
	nt.ck(err)
	*p = b
	return Buf{Ptr: b.Ptr, N: n}
}

func (nt *net) zero(b Buf) { nt.ck(nt.d.Zero(b)) }

// add2 sets dst += src for activations of equal shape (either may be a view).
func (nt *net) add2(dst, src dact) {
	if dst.contiguous() && src.contiguous() {
		nt.ck(nt.d.Axpy(1, src.b, dst.b, dst.n*dst.size()))
		return
	}
	nt.ck(nt.d.Add2D(dst.b, dst.stride, src.b, src.stride, dst.n, dst.size()))
}

// wgrad adds Σ_i A_i·B_iᵀ to gw (M×N, row-major) for batch pairs of row-major
// A_i (M×K, leading dimension lda, stride sa) and B_i (N×K, ldb, sb): one
// strided-batched GEMM into per-image partials, then a fixed-order sum, instead of
// batch skinny GEMMs in sequence (better occupancy for M, N ≪ K).
func (nt *net) wgrad(M, N, K int, a Buf, lda, sa int, b Buf, ldb, sb int, batch int, gw Buf) {
	d := nt.d
	if batch == 1 {
		nt.ck(d.Gemm(false, true, M, N, K, 1, a, lda, b, ldb, 1, gw, N, 1, 0, 0, 0))
		return
	}
	part := nt.grow(&nt.wpart, batch*M*N)
	nt.ck(d.Gemm(false, true, M, N, K, 1, a, lda, b, ldb, 0, part, N, batch, sa, sb, M*N))
	nt.ck(d.SumBatches(part, gw, batch, M*N))
}

// chunk is how many images of rows×cols columns fit the im2col workspace.
func (nt *net) chunk(rows, cols, n int) int {
	return max(1, min(n, nt.colLimit/max(1, rows*cols)))
}

// dconv is model's conv2d (zero or reflection padding fused into im2col).
type dconv struct {
	nt                        *net
	inC, outC, k, stride, pad int
	reflect                   bool
	w, b, gw, gb              Buf
	x                         dact
	out                       Buf
}

func newDconv(nt *net, prefix string, inC, outC, k, stride, pad int, reflect bool) *dconv {
	l := &dconv{nt: nt, inC: inC, outC: outC, k: k, stride: stride, pad: pad, reflect: reflect}
	l.w, l.gw = nt.param(prefix+".weight", outC*inC*k*k)
	l.b, l.gb = nt.param(prefix+".bias", outC)
	return l
}

func (l *dconv) geom(x dact) model.ConvGeom {
	return model.ConvGeom{C: l.inC, H: x.h, W: x.w, K: l.k, Stride: l.stride, Pad: l.pad, Reflect: l.reflect,
		OH: (x.h+2*l.pad-l.k)/l.stride + 1, OW: (x.w+2*l.pad-l.k)/l.stride + 1}
}

func (l *dconv) pointwise() bool { return l.k == 1 && l.stride == 1 && l.pad == 0 }

func (l *dconv) forward(x dact) dact {
	g := l.geom(x)
	y := newDact(l.nt.grow(&l.out, x.n*l.outC*g.OH*g.OW), x.n, l.outC, g.OH, g.OW)
	l.forwardInto(x, y)
	return y
}

func (l *dconv) forwardInto(x, y dact) {
	nt, d := l.nt, l.nt.d
	l.x = x
	g := l.geom(x)
	rows, cols := g.ColRows(), g.ColCols()
	if y.contiguous() {
		nt.ck(d.FillPlanes(y.b, l.b, x.n*l.outC, cols, l.outC))
	} else {
		for i := 0; i < x.n; i++ {
			nt.ck(d.FillPlanes(y.sample(i), l.b, l.outC, cols, l.outC))
		}
	}
	if l.pointwise() {
		nt.ck(d.Gemm(false, false, l.outC, cols, rows, 1, l.w, rows, x.b, cols, 1, y.b, cols, x.n, 0, x.stride, y.stride))
		return
	}
	step := nt.chunk(rows, cols, x.n)
	for i0 := 0; i0 < x.n; i0 += step {
		m := min(step, x.n-i0)
		col := nt.grow(&nt.col, m*rows*cols)
		nt.ck(d.Im2col(g, m, x.sample(i0), x.stride, col, rows*cols))
		nt.ck(d.Gemm(false, false, l.outC, cols, rows, 1, l.w, rows, col, cols, 1, y.sample(i0), cols, m, 0, rows*cols, y.stride))
	}
}

// planeSums adds the plane sums of dy (per channel, over images) to out.
func (nt *net) planeSums(dy dact, out Buf) {
	part := nt.grow(&nt.part, 2*dy.n*dy.c*NP)
	if dy.contiguous() {
		nt.ck(nt.d.PlaneSums(dy.b, dy.n, dy.c, dy.hw(), out, part))
		return
	}
	for i := 0; i < dy.n; i++ {
		nt.ck(nt.d.PlaneSums(dy.sample(i), 1, dy.c, dy.hw(), out, part))
	}
}

// backward accumulates the parameter gradients and, when dx is not nil, adds the
// input gradient to *dx.
func (l *dconv) backward(dy dact, dx *dact) {
	nt, d := l.nt, l.nt.d
	x := l.x
	g := l.geom(x)
	rows, cols := g.ColRows(), g.ColCols()
	nt.planeSums(dy, l.gb)
	if l.pointwise() {
		nt.wgrad(l.outC, rows, cols, dy.b, cols, dy.stride, x.b, cols, x.stride, x.n, l.gw)
		if dx != nil {
			nt.ck(d.Gemm(true, false, rows, cols, l.outC, 1, l.w, rows, dy.b, cols, 1, dx.b, cols, x.n, 0, dy.stride, dx.stride))
		}
		return
	}
	step := nt.chunk(rows, cols, x.n)
	for i0 := 0; i0 < x.n; i0 += step {
		m := min(step, x.n-i0)
		col := nt.grow(&nt.col, m*rows*cols)
		nt.ck(d.Im2col(g, m, x.sample(i0), x.stride, col, rows*cols))
		nt.wgrad(l.outC, rows, cols, dy.sample(i0), cols, dy.stride, col, cols, rows*cols, m, l.gw)
		if dx != nil {
			nt.ck(d.Gemm(true, false, rows, cols, l.outC, 1, l.w, rows, dy.sample(i0), cols, 0, col, cols, m, 0, dy.stride, rows*cols))
			nt.ck(d.Col2im(g, m, col, rows*cols, dx.sample(i0), dx.stride))
		}
	}
}

// dconvT is model's convT2d (PyTorch ConvTranspose2d, zero padding).
type dconvT struct {
	nt                        *net
	inC, outC, k, stride, pad int
	w, b, gw, gb              Buf
	x                         dact
	out                       Buf
}

func newDconvT(nt *net, prefix string, inC, outC, k, stride, pad int) *dconvT {
	l := &dconvT{nt: nt, inC: inC, outC: outC, k: k, stride: stride, pad: pad}
	l.w, l.gw = nt.param(prefix+".weight", inC*outC*k*k)
	l.b, l.gb = nt.param(prefix+".bias", outC)
	return l
}

func (l *dconvT) geom(x dact) model.ConvGeom {
	oh := (x.h-1)*l.stride - 2*l.pad + l.k
	ow := (x.w-1)*l.stride - 2*l.pad + l.k
	return model.ConvGeom{C: l.outC, H: oh, W: ow, K: l.k, Stride: l.stride, Pad: l.pad, OH: x.h, OW: x.w}
}

func (l *dconvT) forward(x dact) dact {
	nt, d := l.nt, l.nt.d
	l.x = x
	g := l.geom(x)
	rows, cols := g.ColRows(), g.ColCols()
	img := l.outC * g.H * g.W
	y := newDact(nt.grow(&l.out, x.n*img), x.n, l.outC, g.H, g.W)
	nt.zero(y.b)
	step := nt.chunk(rows, cols, x.n)
	for i0 := 0; i0 < x.n; i0 += step {
		m := min(step, x.n-i0)
		col := nt.grow(&nt.col, m*rows*cols)
		nt.ck(d.Gemm(true, false, rows, cols, l.inC, 1, l.w, rows, x.sample(i0), cols, 0, col, cols, m, 0, x.stride, rows*cols))
		nt.ck(d.Col2im(g, m, col, rows*cols, y.sample(i0), img))
	}
	nt.ck(d.AddPlaneBias(y.b, l.b, x.n*l.outC, g.H*g.W, l.outC))
	return y
}

func (l *dconvT) backward(dy dact, dx *dact) {
	nt, d := l.nt, l.nt.d
	x := l.x
	g := l.geom(x)
	rows, cols := g.ColRows(), g.ColCols()
	nt.planeSums(dy, l.gb)
	step := nt.chunk(rows, cols, x.n)
	for i0 := 0; i0 < x.n; i0 += step {
		m := min(step, x.n-i0)
		col := nt.grow(&nt.col, m*rows*cols)
		nt.ck(d.Im2col(g, m, dy.sample(i0), dy.stride, col, rows*cols))
		nt.wgrad(l.inC, rows, cols, x.sample(i0), cols, x.stride, col, cols, rows*cols, m, l.gw)
		if dx != nil {
			nt.ck(d.Gemm(false, false, l.inC, cols, rows, 1, l.w, rows, col, cols, 1, dx.sample(i0), cols, m, 0, rows*cols, dx.stride))
		}
	}
}

// dlinear is nn.Linear on n rows.
type dlinear struct {
	nt           *net
	in, out      int
	w, b, gw, gb Buf
	x, y         Buf
	n            int
}

func newDlinear(nt *net, prefix string, in, out int) *dlinear {
	l := &dlinear{nt: nt, in: in, out: out}
	l.w, l.gw = nt.param(prefix+".weight", out*in)
	l.b, l.gb = nt.param(prefix+".bias", out)
	return l
}

func (l *dlinear) forward(x Buf, n int) Buf {
	nt, d := l.nt, l.nt.d
	l.x, l.n = x, n
	y := nt.grow(&l.y, n*l.out)
	nt.ck(d.Gemm(false, true, n, l.out, l.in, 1, x, l.in, l.w, l.in, 0, y, l.out, 1, 0, 0, 0))
	nt.ck(d.AddPlaneBias(y, l.b, n*l.out, 1, l.out))
	return y
}

// backward accumulates the parameter gradients and, when dx.Ptr != 0, adds dy·W to dx.
func (l *dlinear) backward(dy, dx Buf) {
	nt, d := l.nt, l.nt.d
	nt.ck(d.Gemm(true, false, l.out, l.in, l.n, 1, dy, l.out, l.x, l.in, 1, l.gw, l.in, 1, 0, 0, 0))
	nt.ck(d.ColSums(dy, l.n, l.out, l.gb))
	if dx.Ptr != 0 {
		nt.ck(d.Gemm(false, false, l.n, l.in, l.out, 1, dy, l.out, l.w, l.in, 1, dx, l.in, 1, 0, 0, 0))
	}
}

// dmish is a standalone Mish keeping its derivative.
type dmish struct {
	nt   *net
	y, d Buf
}

func (m *dmish) forward(z Buf) Buf {
	y, dd := m.nt.grow(&m.y, z.N), m.nt.grow(&m.d, z.N)
	m.nt.ck(m.nt.d.Mish(z, y, dd, z.N))
	return y
}

func (m *dmish) backward(dy Buf) Buf {
	dd := Buf{Ptr: m.d.Ptr, N: dy.N}
	m.nt.ck(m.nt.d.Mul(dd, dy, dd, dy.N))
	return dd
}

// dblock is Block: reflect 3x3 conv then Mish.
type dblock struct {
	nt   *net
	conv *dconv
	d    Buf
}

func newDblock(nt *net, prefix string, in, out int) *dblock {
	return &dblock{nt: nt, conv: newDconv(nt, prefix+".block.1", in, out, 3, 1, 1, true)}
}

func (b *dblock) forward(x dact) dact {
	y := b.conv.forward(x)
	dd := b.nt.grow(&b.d, y.b.N)
	b.nt.ck(b.nt.d.Mish(y.b, y.b, dd, y.b.N))
	return y
}

func (b *dblock) backward(dy dact, dx *dact) {
	dz := newDact(b.d, dy.n, dy.c, dy.h, dy.w)
	if dy.contiguous() {
		b.nt.ck(b.nt.d.Mul(dz.b, dy.b, dz.b, dz.b.N))
	} else {
		for i := 0; i < dy.n; i++ {
			b.nt.ck(b.nt.d.Mul(dz.sample(i), dy.sample(i), dz.sample(i), dz.size()))
		}
	}
	b.conv.backward(dz, dx)
}

// dresnet is ResnetBlock.
type dresnet struct {
	nt             *net
	din, dout      int
	mlp            *dlinear
	block1, block2 *dblock
	res            *dconv
	x              dact
	dx, dh, tg     Buf
}

func newDresnet(nt *net, prefix string, din, dout, tdim int) *dresnet {
	r := &dresnet{nt: nt, din: din, dout: dout}
	r.mlp = newDlinear(nt, prefix+".mlp.1", tdim, dout)
	r.block1 = newDblock(nt, prefix+".block1", din, dout)
	r.block2 = newDblock(nt, prefix+".block2", dout, dout)
	if din != dout {
		r.res = newDconv(nt, prefix+".res_conv", din, dout, 1, 1, 0, false)
	}
	return r
}

func (r *dresnet) forward(x dact, mt Buf) dact {
	nt := r.nt
	r.x = x
	h := r.block1.forward(x)
	tv := r.mlp.forward(mt, x.n)
	nt.ck(nt.d.AddPlaneBias(h.b, tv, x.n*r.dout, h.hw(), x.n*r.dout))
	y := r.block2.forward(h)
	if r.res != nil {
		nt.add2(y, r.res.forward(x))
	} else {
		nt.add2(y, x)
	}
	return y
}

func (r *dresnet) backward(dy dact, dmt Buf, needDx bool) dact {
	nt := r.nt
	x := r.x
	var dx dact
	var dxp *dact
	if needDx {
		dx = newDact(nt.grow(&r.dx, x.n*x.size()), x.n, x.c, x.h, x.w)
		nt.zero(dx.b)
		dxp = &dx
	}
	if r.res != nil {
		r.res.backward(dy, dxp)
	} else if needDx {
		nt.add2(dx, dy)
	}
	dh := newDact(nt.grow(&r.dh, x.n*r.dout*dy.hw()), x.n, r.dout, dy.h, dy.w)
	nt.zero(dh.b)
	r.block2.backward(dy, &dh)
	tg := nt.grow(&r.tg, x.n*r.dout)
	nt.zero(tg)
	nt.planeSumsPer(dh, tg)
	r.mlp.backward(tg, dmt)
	r.block1.backward(dh, dxp)
	return dx
}

// planeSumsPer adds the sum of each plane (i, c) of dy to out[i·C+c].
func (nt *net) planeSumsPer(dy dact, out Buf) {
	part := nt.grow(&nt.part, 2*dy.n*dy.c*NP)
	nt.ck(nt.d.PlaneSums(dy.b, 1, dy.n*dy.c, dy.hw(), out, part))
}
