package model

import "fmt"

const lreluSlope = 0.2

// rdb is ResidualDenseBlock_5C: five 3x3 convs over a growing dense concatenation,
// LeakyReLU(0.2) after the first four, output x5·0.2 + x. The concatenation lives in
// one N×(nf+4gc)×H×W buffer; conv i reads its first nf+i·gc channels and writes the
// next gc, so no concatenation is ever copied.
type rdb struct {
	be     Backend
	nf, gc int
	convs  [5]*conv2d
	own    []float32 // dense buffer kept for backward (training)
	d      act       // dense tensor of the last forward
}

func newRDB(ps *paramSet, be Backend, ws *workspace, prefix string, nf, gc int) *rdb {
	r := &rdb{be: be, nf: nf, gc: gc}
	for i := 0; i < 5; i++ {
		out := gc
		if i == 4 {
			out = nf
		}
		r.convs[i] = newConv2d(ps, be, ws, fmt.Sprintf("%s.conv%d", prefix, i+1), nf+i*gc, out, 3, 1, 1, false)
	}
	return r
}

// forward writes x + 0.2·conv5(dense) into out; dense and tmp are scratch (dense must
// be the block's own buffer when backward follows).
func (r *rdb) forward(x act, dense, tmp []float32, out act) {
	ct := r.nf + 4*r.gc
	D := newAct(dense, x.n, ct, x.h, x.w)
	r.d = D
	for n := 0; n < x.n; n++ {
		copy(D.sample(n)[:x.size()], x.sample(n))
	}
	for i := 0; i < 4; i++ {
		slot := D.channels(r.nf+i*r.gc, r.gc)
		r.convs[i].forwardInto(D.channels(0, r.nf+i*r.gc), slot)
		for n := 0; n < x.n; n++ {
			r.be.LeakyReLU(slot.sample(n), lreluSlope)
		}
	}
	t := newAct(tmp, x.n, r.nf, x.h, x.w)
	r.convs[4].forwardInto(D, t)
	for n := 0; n < x.n; n++ {
		o := out.sample(n)
		copy(o, x.sample(n))
		r.be.Axpy(0.2, t.sample(n), o)
	}
}

// backward adds the input gradient for output gradient dy to dx. ddense and tmp are scratch.
func (r *rdb) backward(dy, dx act, ddense, tmp []float32) {
	D := r.d
	dD := newAct(ddense, D.n, D.c, D.h, D.w)
	clear(dD.data)
	t := newAct(tmp, dy.n, r.nf, dy.h, dy.w)
	clear(t.data)
	for n := 0; n < dy.n; n++ {
		r.be.Axpy(0.2, dy.sample(n), t.sample(n))
	}
	r.convs[4].backward(t, &dD)
	for i := 3; i >= 0; i-- {
		slot := dD.channels(r.nf+i*r.gc, r.gc)
		ys := D.channels(r.nf+i*r.gc, r.gc)
		for n := 0; n < dy.n; n++ {
			r.be.LeakyReLUGrad(ys.sample(n), slot.sample(n), lreluSlope)
		}
		pre := dD.channels(0, r.nf+i*r.gc)
		r.convs[i].backward(slot, &pre)
	}
	xs := dD.channels(0, r.nf)
	for n := 0; n < dy.n; n++ {
		r.be.Axpy(1, dy.sample(n), dx.sample(n))
		r.be.Axpy(1, xs.sample(n), dx.sample(n))
	}
}

// rrdbBlock is RRDB: three RDBs, output out·0.2 + x.
type rrdbBlock struct {
	be   Backend
	rdbs [3]*rdb
}

// rrdbNet is RRDBNet(3, 3, nf, nb, gc) for x4 (METHOD §3), parameters under "rrdb.".
type rrdbNet struct {
	be                 Backend
	ws                 *workspace
	nf, nb, gc         int
	convFirst          *conv2d
	blocks             []*rrdbBlock
	trunk              *conv2d
	up1, up2, hr, last *conv2d
	params             []*Param
	flops              []*int64
	data, grad         []float32 // contiguous values and gradients, in params order

	xin, s1, s2, tmp, dense, ddense []float32
	bo                              [2][]float32
	g1, g2, gp0, gp1                []float32
	u1, u2, outBuf                  []float32
	dz, dhr, dc2, du2, dc1, du1     []float32
	dfea, dfirst                    []float32
	feaFirst, fea                   act
	c1, c2, hrOut                   act
	lastOut                         act
}

func newRRDBNet(ps *paramSet, be Backend, ws *workspace, nf, nb, gc int) (*rrdbNet, error) {
	if nf < 1 || gc < 1 || nb < 2 {
		return nil, fmt.Errorf("model: rrdb needs nf ≥ 1, gc ≥ 1, nb ≥ 2 (got nf %d, nb %d, gc %d)", nf, nb, gc)
	}
	start, startF := len(ps.params), len(ps.flops)
	r := &rrdbNet{be: be, ws: ws, nf: nf, nb: nb, gc: gc}
	const p = "rrdb."
	r.convFirst = newConv2d(ps, be, ws, p+"conv_first", 3, nf, 3, 1, 1, false)
	for b := 0; b < nb; b++ {
		blk := &rrdbBlock{be: be}
		for k := 0; k < 3; k++ {
			blk.rdbs[k] = newRDB(ps, be, ws, fmt.Sprintf("%sRRDB_trunk.%d.RDB%d", p, b, k+1), nf, gc)
		}
		r.blocks = append(r.blocks, blk)
	}
	r.trunk = newConv2d(ps, be, ws, p+"trunk_conv", nf, nf, 3, 1, 1, false)
	r.up1 = newConv2d(ps, be, ws, p+"upconv1", nf, nf, 3, 1, 1, false)
	r.up2 = newConv2d(ps, be, ws, p+"upconv2", nf, nf, 3, 1, 1, false)
	r.hr = newConv2d(ps, be, ws, p+"HRconv", nf, nf, 3, 1, 1, false)
	r.last = newConv2d(ps, be, ws, p+"conv_last", nf, 3, 3, 1, 1, false)
	r.params = ps.params[start:]
	r.flops = ps.flops[startF:]
	r.data, r.grad = ps.pack(start)
	return r, nil
}

// condChannels is the channel count of the conditioning: nf per selected map
// (maps 2, 5, 8, … of the nb+1 feature maps, i.e. feas[2::3]).
func (r *rrdbNet) condChannels() int { return r.nf * ((r.nb + 1) / 3) }

// forward runs the trunk on lr (N×3×h×w in [-1,1]) and writes the conditioning
// features into cond (N×condChannels×h×w). With train set, every block keeps its
// activations for backward; otherwise one dense buffer is shared.
func (r *rrdbNet) forward(lr act, cond act, train bool) {
	n, h, w := lr.n, lr.h, lr.w
	x := newAct(grow(&r.xin, n*3*h*w), n, 3, h, w)
	for s := 0; s < n; s++ {
		src, dst := lr.sample(s), x.sample(s)
		for i, v := range src {
			dst[i] = (v + 1) / 2
		}
	}
	fea := r.convFirst.forward(x)
	r.feaFirst = fea
	sz := n * r.nf * h * w
	s1 := newAct(grow(&r.s1, sz), n, r.nf, h, w)
	s2 := newAct(grow(&r.s2, sz), n, r.nf, h, w)
	tmp := grow(&r.tmp, sz)
	dsz := n * (r.nf + 4*r.gc) * h * w
	shared := grow(&r.dense, dsz)
	sel := 0
	for b, blk := range r.blocks {
		out := newAct(grow(&r.bo[b%2], sz), n, r.nf, h, w)
		dense := func(k int) []float32 {
			if !train {
				return shared
			}
			return grow(&blk.rdbs[k].own, dsz)
		}
		blk.rdbs[0].forward(fea, dense(0), tmp, s1)
		blk.rdbs[1].forward(s1, dense(1), tmp, s2)
		blk.rdbs[2].forward(s2, dense(2), tmp, s1)
		for s := 0; s < n; s++ {
			o := out.sample(s)
			copy(o, fea.sample(s))
			r.be.Axpy(0.2, s1.sample(s), o)
		}
		if b%3 == 2 {
			r.copyCond(out, cond, sel)
			sel++
		}
		fea = out
	}
	r.lastOut = fea
	t := r.trunk.forward(fea)
	r.be.Axpy(1, r.feaFirst.data, t.data)
	r.fea = t
	if r.nb%3 == 2 {
		r.copyCond(t, cond, sel)
	}
}

func (r *rrdbNet) copyCond(f, cond act, sel int) {
	slot := cond.channels(sel*r.nf, r.nf)
	for s := 0; s < f.n; s++ {
		copy(slot.sample(s), f.sample(s))
	}
}

// head runs the x4 SR head on the last forward's fused features and returns the
// SR image N×3×4h×4w in [-1,1] (a buffer of the net).
func (r *rrdbNet) head() act {
	f := r.fea
	n, h, w := f.n, f.h, f.w
	u1 := newAct(grow(&r.u1, n*r.nf*4*h*w), n, r.nf, 2*h, 2*w)
	r.be.Upsample2x(f.data, u1.data, n*r.nf, h, w)
	c1 := r.up1.forward(u1)
	r.be.LeakyReLU(c1.data, lreluSlope)
	r.c1 = c1
	u2 := newAct(grow(&r.u2, n*r.nf*16*h*w), n, r.nf, 4*h, 4*w)
	r.be.Upsample2x(c1.data, u2.data, n*r.nf, 2*h, 2*w)
	c2 := r.up2.forward(u2)
	r.be.LeakyReLU(c2.data, lreluSlope)
	r.c2 = c2
	hr := r.hr.forward(c2)
	r.be.LeakyReLU(hr.data, lreluSlope)
	r.hrOut = hr
	z := r.last.forward(hr)
	out := newAct(grow(&r.outBuf, len(z.data)), n, 3, 4*h, 4*w)
	for i, v := range z.data {
		if v < 0 {
			v = 0
		} else if v > 1 {
			v = 1
		}
		out.data[i] = v*2 - 1
	}
	return out
}

// backward accumulates the RRDB parameter gradients for dout, the gradient of the
// head's output (after forward(train=true) and head()).
func (r *rrdbNet) backward(dout act) {
	z := r.last.out
	dz := newAct(grow(&r.dz, len(dout.data)), dout.n, 3, dout.h, dout.w)
	for i, g := range dout.data {
		v := z[i]
		if v >= 0 && v <= 1 {
			dz.data[i] = 2 * g
		} else {
			dz.data[i] = 0
		}
	}
	zeroLike := func(buf *[]float32, a act) act {
		d := newAct(grow(buf, a.n*a.size()), a.n, a.c, a.h, a.w)
		clear(d.data)
		return d
	}
	dhr := zeroLike(&r.dhr, r.hrOut)
	r.last.backward(dz, &dhr)
	r.be.LeakyReLUGrad(r.hrOut.data, dhr.data, lreluSlope)
	dc2 := zeroLike(&r.dc2, r.c2)
	r.hr.backward(dhr, &dc2)
	r.be.LeakyReLUGrad(r.c2.data, dc2.data, lreluSlope)
	du2 := zeroLike(&r.du2, r.up2.x)
	r.up2.backward(dc2, &du2)
	dc1 := zeroLike(&r.dc1, r.c1)
	r.be.Upsample2xGrad(du2.data, dc1.data, r.c1.n*r.c1.c, r.c1.h, r.c1.w)
	r.be.LeakyReLUGrad(r.c1.data, dc1.data, lreluSlope)
	du1 := zeroLike(&r.du1, r.up1.x)
	r.up1.backward(dc1, &du1)
	dfea := zeroLike(&r.dfea, r.fea)
	r.be.Upsample2xGrad(du1.data, dfea.data, r.fea.n*r.fea.c, r.fea.h, r.fea.w)
	r.backwardTrunk(dfea)
}

// backwardTrunk accumulates gradients for dfea, the gradient of the fused features
// fea_first + trunk_conv(last block).
func (r *rrdbNet) backwardTrunk(dfea act) {
	f := r.fea
	n := f.n
	sz := n * f.size()
	dfirst := newAct(grow(&r.dfirst, sz), n, f.c, f.h, f.w)
	copy(dfirst.data, dfea.data)
	dl := newAct(grow(&r.gp0, sz), n, f.c, f.h, f.w)
	clear(dl.data)
	r.trunk.backward(dfea, &dl)
	g1 := newAct(grow(&r.g1, sz), n, f.c, f.h, f.w)
	g2 := newAct(grow(&r.g2, sz), n, f.c, f.h, f.w)
	tmp := grow(&r.tmp, sz)
	ddense := grow(&r.ddense, n*(r.nf+4*r.gc)*f.h*f.w)
	bufs := [2]*[]float32{&r.gp0, &r.gp1}
	for b := len(r.blocks) - 1; b >= 0; b-- {
		blk := r.blocks[b]
		prev := newAct(grow(bufs[(len(r.blocks)-b)%2], sz), n, f.c, f.h, f.w)
		clear(prev.data)
		// out = x + 0.2·rdb3(rdb2(rdb1(x)))
		for s := 0; s < n; s++ {
			r.be.Axpy(1, dl.sample(s), prev.sample(s))
		}
		clear(g1.data)
		r.be.Axpy(0.2, dl.data, g1.data)
		clear(g2.data)
		blk.rdbs[2].backward(g1, g2, ddense, tmp)
		clear(g1.data)
		blk.rdbs[1].backward(g2, g1, ddense, tmp)
		blk.rdbs[0].backward(g1, prev, ddense, tmp)
		dl = prev
	}
	r.be.Axpy(1, dl.data, dfirst.data)
	r.convFirst.backward(dfirst, nil)
}
