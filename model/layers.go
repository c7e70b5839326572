package model

import (
	"math"
	"math/rand/v2"
)

// Param is one named parameter tensor: its values and its gradient, both flat
// float32 in the order of Shape (PyTorch's layout: conv weights are
// out×in×kh×kw, transposed-conv weights in×out×kh×kw, linear weights out×in).
type Param struct {
	// Name is the PyTorch state-dict name of the reference implementation,
	// e.g. "denoise_fn.downs.0.0.block1.block.1.weight" or "rrdb.conv_first.bias".
	Name string
	// Shape is the tensor shape.
	Shape []int
	// Data holds the values; Grad the gradient of the last loss call (same length).
	Data, Grad []float32
}

// Size is the number of elements.
func (p *Param) Size() int { return len(p.Data) }

// paramSet collects parameters in creation order and initialises them from one
// random stream.
type paramSet struct {
	params []*Param
	rng    *rand.Rand
	flops  []*int64 // FLOP counters of the convolutions, for benchmarks
}

// uniform creates a parameter filled with U(-bound, bound).
func (s *paramSet) uniform(name string, bound float64, shape ...int) *Param {
	n := 1
	for _, d := range shape {
		n *= d
	}
	p := &Param{Name: name, Shape: append([]int(nil), shape...), Data: make([]float32, n), Grad: make([]float32, n)}
	for i := range p.Data {
		p.Data[i] = float32((s.rng.Float64()*2 - 1) * bound)
	}
	s.params = append(s.params, p)
	return p
}

// pack moves the Data and Grad of params[from:] into two contiguous slabs (in
// order) and returns them, so that a collective can reduce all gradients at once.
func (s *paramSet) pack(from int) (data, grad []float32) {
	n := 0
	for _, p := range s.params[from:] {
		n += len(p.Data)
	}
	data, grad = make([]float32, n), make([]float32, n)
	off := 0
	for _, p := range s.params[from:] {
		k := len(p.Data)
		copy(data[off:off+k], p.Data)
		p.Data = data[off : off+k : off+k]
		p.Grad = grad[off : off+k : off+k]
		off += k
	}
	return data, grad
}

// act is an activation tensor N×C×H×W whose sample n starts at data[n*stride]; a
// sample's C·H·W elements are contiguous. stride > C·H·W makes a channel slice of a
// bigger tensor (dense concatenations).
type act struct {
	data       []float32
	n, c, h, w int
	stride     int
}

func newAct(buf []float32, n, c, h, w int) act {
	return act{data: buf[:n*c*h*w], n: n, c: c, h: h, w: w, stride: c * h * w}
}

func (a act) hw() int   { return a.h * a.w }
func (a act) size() int { return a.c * a.h * a.w }

// sample returns sample i's contiguous C·H·W elements.
func (a act) sample(i int) []float32 { return a.data[i*a.stride : i*a.stride+a.size()] }

// channels returns a view of channels [from, from+c).
func (a act) channels(from, c int) act {
	return act{data: a.data[from*a.hw():], n: a.n, c: c, h: a.h, w: a.w, stride: a.stride}
}

// contiguous reports whether the samples are packed back to back.
func (a act) contiguous() bool { return a.stride == a.size() }

// grow returns (*b)[:n], reallocating only when the capacity is too small.
func grow(b *[]float32, n int) []float32 {
	if cap(*b) < n {
		*b = make([]float32, n)
	}
	*b = (*b)[:n]
	return *b
}

// workspace holds scratch shared by all layers of one model (they run one at a time).
type workspace struct {
	col []float32
}

// conv2d is a 2-D convolution with bias (PyTorch nn.Conv2d), zero or reflection
// padding fused into im2col (ReflectionPad2d(p) + Conv2d(padding=0) == reflect conv).
type conv2d struct {
	be                        Backend
	ws                        *workspace
	inC, outC, k, stride, pad int
	reflect                   bool
	w, b                      *Param
	x                         act // input saved for backward
	out                       []float32
	flops                     int64
}

// newConv2d registers prefix.weight (outC×inC×k×k) and prefix.bias with PyTorch's
// default init: kaiming_uniform(a=√5) == U(±1/√fan_in), bias U(±1/√fan_in).
func newConv2d(ps *paramSet, be Backend, ws *workspace, prefix string, inC, outC, k, stride, pad int, reflect bool) *conv2d {
	bound := 1 / math.Sqrt(float64(inC*k*k))
	l := &conv2d{be: be, ws: ws, inC: inC, outC: outC, k: k, stride: stride, pad: pad, reflect: reflect}
	l.w = ps.uniform(prefix+".weight", bound, outC, inC, k, k)
	l.b = ps.uniform(prefix+".bias", bound, outC)
	ps.flops = append(ps.flops, &l.flops)
	return l
}

func (l *conv2d) geom(x act) ConvGeom {
	return ConvGeom{C: l.inC, H: x.h, W: x.w, K: l.k, Stride: l.stride, Pad: l.pad, Reflect: l.reflect,
		OH: (x.h+2*l.pad-l.k)/l.stride + 1, OW: (x.w+2*l.pad-l.k)/l.stride + 1}
}

func (l *conv2d) pointwise() bool { return l.k == 1 && l.stride == 1 && l.pad == 0 }

// forward runs the convolution into the layer's own output buffer.
func (l *conv2d) forward(x act) act {
	g := l.geom(x)
	y := newAct(grow(&l.out, x.n*l.outC*g.OH*g.OW), x.n, l.outC, g.OH, g.OW)
	l.forwardInto(x, y)
	return y
}

// forwardInto writes the convolution of x into y (which may be a channel view).
func (l *conv2d) forwardInto(x, y act) {
	l.x = x
	g := l.geom(x)
	rows, cols := g.ColRows(), g.ColCols()
	for n := 0; n < x.n; n++ {
		col := x.sample(n)
		if !l.pointwise() {
			col = grow(&l.ws.col, rows*cols)
			l.be.Im2col(g, x.sample(n), col)
		}
		// Start from the bias and accumulate (beta 1): one pass over the output
		// instead of BLAS's zeroing pass plus a bias pass.
		yn := y.sample(n)
		l.be.FillPlanes(yn, l.b.Data, l.outC, cols)
		l.be.Gemm(false, false, l.outC, cols, rows, 1, l.w.Data, rows, col, cols, 1, yn, cols)
	}
	l.flops += int64(2 * x.n * l.outC * rows * cols)
}

// backward accumulates the parameter gradients for output gradient dy and, when dx
// is not nil, adds the input gradient to *dx.
func (l *conv2d) backward(dy act, dx *act) {
	x := l.x
	g := l.geom(x)
	rows, cols := g.ColRows(), g.ColCols()
	for n := 0; n < x.n; n++ {
		col := x.sample(n)
		if !l.pointwise() {
			col = grow(&l.ws.col, rows*cols)
			l.be.Im2col(g, x.sample(n), col)
		}
		dyn := dy.sample(n)
		l.be.Gemm(false, true, l.outC, rows, cols, 1, dyn, cols, col, cols, 1, l.w.Grad, rows)
		l.be.PlaneSums(dyn, l.outC, cols, l.b.Grad)
		if dx == nil {
			continue
		}
		if l.pointwise() {
			l.be.Gemm(true, false, rows, cols, l.outC, 1, l.w.Data, rows, dyn, cols, 1, dx.sample(n), cols)
			continue
		}
		l.be.Gemm(true, false, rows, cols, l.outC, 1, l.w.Data, rows, dyn, cols, 0, col, cols)
		l.be.Col2im(g, col, dx.sample(n))
	}
	mult := int64(1)
	if dx != nil {
		mult = 2
	}
	l.flops += mult * int64(2*x.n*l.outC*rows*cols)
}

// convT2d is PyTorch's nn.ConvTranspose2d (zero padding, output_padding 0):
// the adjoint of a convolution, computed as gemm then col2im.
type convT2d struct {
	be                        Backend
	ws                        *workspace
	inC, outC, k, stride, pad int
	w, b                      *Param
	x                         act
	out                       []float32
	flops                     int64
}

// newConvT2d registers prefix.weight (inC×outC×k×k) and prefix.bias. PyTorch's
// fan_in for a transposed conv weight is weight.size(1)·k·k = outC·k·k.
func newConvT2d(ps *paramSet, be Backend, ws *workspace, prefix string, inC, outC, k, stride, pad int) *convT2d {
	bound := 1 / math.Sqrt(float64(outC*k*k))
	l := &convT2d{be: be, ws: ws, inC: inC, outC: outC, k: k, stride: stride, pad: pad}
	l.w = ps.uniform(prefix+".weight", bound, inC, outC, k, k)
	l.b = ps.uniform(prefix+".bias", bound, outC)
	ps.flops = append(ps.flops, &l.flops)
	return l
}

// geom is the geometry of the equivalent convolution whose input is our output.
func (l *convT2d) geom(x act) ConvGeom {
	oh := (x.h-1)*l.stride - 2*l.pad + l.k
	ow := (x.w-1)*l.stride - 2*l.pad + l.k
	return ConvGeom{C: l.outC, H: oh, W: ow, K: l.k, Stride: l.stride, Pad: l.pad, OH: x.h, OW: x.w}
}

func (l *convT2d) forward(x act) act {
	l.x = x
	g := l.geom(x)
	rows, cols := g.ColRows(), g.ColCols()
	y := newAct(grow(&l.out, x.n*l.outC*g.H*g.W), x.n, l.outC, g.H, g.W)
	clear(y.data)
	for n := 0; n < x.n; n++ {
		col := grow(&l.ws.col, rows*cols)
		l.be.Gemm(true, false, rows, cols, l.inC, 1, l.w.Data, rows, x.sample(n), cols, 0, col, cols)
		yn := y.sample(n)
		l.be.Col2im(g, col, yn)
		l.be.AddPlaneBias(yn, l.b.Data, l.outC, g.H*g.W)
	}
	l.flops += int64(2 * x.n * l.inC * rows * cols)
	return y
}

func (l *convT2d) backward(dy act, dx *act) {
	x := l.x
	g := l.geom(x)
	rows, cols := g.ColRows(), g.ColCols()
	for n := 0; n < x.n; n++ {
		col := grow(&l.ws.col, rows*cols)
		dyn := dy.sample(n)
		l.be.Im2col(g, dyn, col)
		l.be.Gemm(false, true, l.inC, rows, cols, 1, x.sample(n), cols, col, cols, 1, l.w.Grad, rows)
		l.be.PlaneSums(dyn, l.outC, g.H*g.W, l.b.Grad)
		if dx != nil {
			l.be.Gemm(false, false, l.inC, cols, rows, 1, l.w.Data, rows, col, cols, 1, dx.sample(n), cols)
		}
	}
	mult := int64(1)
	if dx != nil {
		mult = 2
	}
	l.flops += mult * int64(2*x.n*l.inC*rows*cols)
}

// linear is nn.Linear on N×in rows: y = x·Wᵀ + b.
type linear struct {
	be      Backend
	in, out int
	w, b    *Param
	x       []float32
	n       int
	y       []float32
}

func newLinear(ps *paramSet, be Backend, prefix string, in, out int) *linear {
	bound := 1 / math.Sqrt(float64(in))
	l := &linear{be: be, in: in, out: out}
	l.w = ps.uniform(prefix+".weight", bound, out, in)
	l.b = ps.uniform(prefix+".bias", bound, out)
	return l
}

func (l *linear) forward(x []float32, n int) []float32 {
	l.x, l.n = x, n
	y := grow(&l.y, n*l.out)
	l.be.Gemm(false, true, n, l.out, l.in, 1, x, l.in, l.w.Data, l.in, 0, y, l.out)
	for i := 0; i < n; i++ {
		row := y[i*l.out : (i+1)*l.out]
		for j := range row {
			row[j] += l.b.Data[j]
		}
	}
	return y
}

// backward accumulates parameter gradients and, when dx is not nil, adds dy·W to dx.
func (l *linear) backward(dy, dx []float32) {
	l.be.Gemm(true, false, l.out, l.in, l.n, 1, dy, l.out, l.x, l.in, 1, l.w.Grad, l.in)
	for j := 0; j < l.out; j++ {
		var s float64
		for i := 0; i < l.n; i++ {
			s += float64(dy[i*l.out+j])
		}
		l.b.Grad[j] += float32(s)
	}
	if dx != nil {
		l.be.Gemm(false, false, l.n, l.in, l.out, 1, dy, l.out, l.w.Data, l.in, 1, dx, l.in)
	}
}

// mish is a standalone Mish activation keeping its derivative for backward.
type mish struct {
	be   Backend
	y, d []float32
}

func (m *mish) forward(z []float32) []float32 {
	y := grow(&m.y, len(z))
	d := grow(&m.d, len(z))
	m.be.Mish(z, y, d)
	return y
}

// backward returns dz = dy·mish'(z) in the layer's derivative buffer.
func (m *mish) backward(dy []float32) []float32 {
	m.be.Mul(m.d, dy, m.d)
	return m.d
}

// block is the U-Net Block with groups = 0: ReflectionPad2d(1), Conv2d(k=3), Mish.
// Its parameters are prefix.block.1.{weight,bias}.
type block struct {
	be   Backend
	conv *conv2d
	d    []float32
}

func newBlock(ps *paramSet, be Backend, ws *workspace, prefix string, in, out int) *block {
	return &block{be: be, conv: newConv2d(ps, be, ws, prefix+".block.1", in, out, 3, 1, 1, true)}
}

func (b *block) forward(x act) act {
	y := b.conv.forward(x)
	d := grow(&b.d, len(y.data))
	b.be.Mish(y.data, y.data, d)
	return y
}

// backward adds the input gradient to *dx (when not nil).
func (b *block) backward(dy act, dx *act) {
	dz := newAct(b.d, dy.n, dy.c, dy.h, dy.w)
	for n := 0; n < dy.n; n++ {
		b.be.Mul(dz.sample(n), dy.sample(n), dz.sample(n))
	}
	b.conv.backward(dz, dx)
}

// SinusoidalEmb is SinusoidalPosEmb(dim): [sin(t·f_i), cos(t·f_i)], f_i = exp(-i·ln(10000)/(dim/2-1)).
func SinusoidalEmb(t []int, dim int, out []float32) {
	half := dim / 2
	scale := math.Log(10000) / float64(half-1)
	for n, tt := range t {
		for i := 0; i < half; i++ {
			// PyTorch computes this in float32; do the same for the argument.
			f := float32(math.Exp(-float64(i) * scale))
			arg := float64(float32(tt) * f)
			out[n*dim+i] = float32(math.Sin(arg))
			out[n*dim+half+i] = float32(math.Cos(arg))
		}
	}
}

// reflectPad returns x padded by p on each side with reflection (ReflectionPad2d);
// used by tests as an independent route to the fused reflect convolution.
func reflectPad(x []float32, n, c, h, w, p int) []float32 {
	oh, ow := h+2*p, w+2*p
	y := make([]float32, n*c*oh*ow)
	for q := 0; q < n*c; q++ {
		for i := 0; i < oh; i++ {
			si := reflectIndex(i-p, h)
			for j := 0; j < ow; j++ {
				y[q*oh*ow+i*ow+j] = x[q*h*w+si*w+reflectIndex(j-p, w)]
			}
		}
	}
	return y
}

// reflectPadBackward folds the gradient of a reflect-padded tensor back onto the input.
func reflectPadBackward(dy []float32, n, c, h, w, p int) []float32 {
	oh, ow := h+2*p, w+2*p
	dx := make([]float32, n*c*h*w)
	for q := 0; q < n*c; q++ {
		for i := 0; i < oh; i++ {
			si := reflectIndex(i-p, h)
			for j := 0; j < ow; j++ {
				dx[q*h*w+si*w+reflectIndex(j-p, w)] += dy[q*oh*ow+i*ow+j]
			}
		}
	}
	return dx
}
