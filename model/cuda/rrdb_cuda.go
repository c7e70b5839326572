//go:build cuda

package cuda

import (
	"fmt"
	"math"

	"github.com/samdiffsr/samdiffsr/model"
)

// backward of one RDB (model's rdb.backward): adds the input gradient of dy to dx.
func (rd *dRDB) backward(dy, dx dact, ddense, tmp Buf) {
	nt, d := rd.nt, rd.nt.d
	D := rd.d
	dD := newDact(ddense, D.n, D.c, D.h, D.w)
	nt.zero(dD.b)
	t := newDact(tmp, dy.n, rd.nf, dy.h, dy.w)
	nt.zero(t.b)
	nt.ck(d.Axpy(0.2, dy.b, t.b, dy.n*dy.size()))
	rd.convs[4].backward(t, &dD)
	for i := 3; i >= 0; i-- {
		slot := dD.channels(rd.nf+i*rd.gc, rd.gc)
		ys := D.channels(rd.nf+i*rd.gc, rd.gc)
		for s := 0; s < dy.n; s++ {
			nt.ck(d.LeakyReLUGrad(ys.sample(s), slot.sample(s), slot.size(), 0.2))
		}
		pre := dD.channels(0, rd.nf+i*rd.gc)
		rd.convs[i].backward(slot, &pre)
	}
	nt.add2(dx, dy)
	nt.add2(dx, dD.channels(0, rd.nf))
}

// head runs the x4 SR head on the last forward's features (model's rrdbNet.head)
// and returns the output N×3×4h×4w in [-1,1].
func (r *dRRDB) head() dact {
	nt, d := r.nt, r.nt.d
	f := r.fea
	n, h, w := f.n, f.h, f.w
	u1 := newDact(nt.grow(&r.u1, n*r.nf*4*h*w), n, r.nf, 2*h, 2*w)
	nt.ck(d.Upsample2x(f.b, u1.b, n*r.nf, h, w))
	c1 := r.up1.forward(u1)
	nt.ck(d.LeakyReLU(c1.b, c1.b.N, 0.2))
	r.c1 = c1
	u2 := newDact(nt.grow(&r.u2, n*r.nf*16*h*w), n, r.nf, 4*h, 4*w)
	nt.ck(d.Upsample2x(c1.b, u2.b, n*r.nf, 2*h, 2*w))
	c2 := r.up2.forward(u2)
	nt.ck(d.LeakyReLU(c2.b, c2.b.N, 0.2))
	r.c2 = c2
	hr := r.hr.forward(c2)
	nt.ck(d.LeakyReLU(hr.b, hr.b.N, 0.2))
	r.hrOut = hr
	z := r.last.forward(hr)
	r.z = z
	out := newDact(nt.grow(&r.outB, z.b.N), n, 3, 4*h, 4*w)
	nt.ck(d.ClampOut(z.b, out.b, z.b.N))
	return out
}

// backward accumulates the RRDB gradients for dout, the gradient of the head's
// output (after forward with train and head), as model's rrdbNet.backward.
func (r *dRRDB) backward(dout dact) {
	nt, d := r.nt, r.nt.d
	zeroLike := func(p *Buf, a dact) dact {
		x := newDact(nt.grow(p, a.n*a.size()), a.n, a.c, a.h, a.w)
		nt.zero(x.b)
		return x
	}
	dz := newDact(nt.grow(&r.dz, dout.b.N), dout.n, 3, dout.h, dout.w)
	nt.ck(d.ClampOutGrad(r.z.b, dout.b, dz.b, dz.b.N))
	dhr := zeroLike(&r.dhr, r.hrOut)
	r.last.backward(dz, &dhr)
	nt.ck(d.LeakyReLUGrad(r.hrOut.b, dhr.b, dhr.b.N, 0.2))
	dc2 := zeroLike(&r.dc2, r.c2)
	r.hr.backward(dhr, &dc2)
	nt.ck(d.LeakyReLUGrad(r.c2.b, dc2.b, dc2.b.N, 0.2))
	du2 := zeroLike(&r.du2, r.up2.x)
	r.up2.backward(dc2, &du2)
	dc1 := zeroLike(&r.dc1, r.c1)
	nt.ck(d.Upsample2xGrad(du2.b, dc1.b, r.c1.n*r.c1.c, r.c1.h, r.c1.w))
	nt.ck(d.LeakyReLUGrad(r.c1.b, dc1.b, dc1.b.N, 0.2))
	du1 := zeroLike(&r.du1, r.up1.x)
	r.up1.backward(dc1, &du1)
	dfea := zeroLike(&r.dfea, r.fea)
	nt.ck(d.Upsample2xGrad(du1.b, dfea.b, r.fea.n*r.fea.c, r.fea.h, r.fea.w))
	r.backwardTrunk(dfea)
}

func (r *dRRDB) backwardTrunk(dfea dact) {
	nt, d := r.nt, r.nt.d
	f := r.fea
	n := f.n
	sz := n * f.size()
	dfirst := newDact(nt.grow(&r.dfirst, sz), n, f.c, f.h, f.w)
	nt.ck(d.Copy2D(dfirst.b, sz, dfea.b, sz, 1, sz))
	dl := newDact(nt.grow(&r.gp0, sz), n, f.c, f.h, f.w)
	nt.zero(dl.b)
	r.trunk.backward(dfea, &dl)
	g1 := newDact(nt.grow(&r.g1, sz), n, f.c, f.h, f.w)
	g2 := newDact(nt.grow(&r.g2, sz), n, f.c, f.h, f.w)
	tmp := nt.grow(&r.tmp, sz)
	ddense := nt.grow(&r.ddense, n*(r.nf+4*r.gc)*f.h*f.w)
	bufs := [2]*Buf{&r.gp0, &r.gp1}
	nb := len(r.rdbs)
	for b := nb - 1; b >= 0; b-- {
		blk := r.rdbs[b]
		prev := newDact(nt.grow(bufs[(nb-b)%2], sz), n, f.c, f.h, f.w)
		nt.zero(prev.b)
		// out = x + 0.2·rdb3(rdb2(rdb1(x)))
		nt.add2(prev, dl)
		nt.zero(g1.b)
		nt.ck(d.Axpy(0.2, dl.b, g1.b, sz))
		nt.zero(g2.b)
		blk[2].backward(g1, g2, ddense, tmp)
		nt.zero(g1.b)
		blk[1].backward(g2, g1, ddense, tmp)
		blk[0].backward(g1, prev, ddense, tmp)
		dl = prev
	}
	nt.ck(d.Axpy(1, dl.b, dfirst.b, sz))
	r.convFirst.backward(dfirst, nil)
}

// RRDBLoss is model.SRDiff.RRDBLoss on the GPU: the RRDB pretraining loss
// mean|RRDB(LR) - HR|; it overwrites the device RRDB gradients.
func (tr *Trainer) RRDBLoss(b *model.Batch) (float32, error) {
	d, rn := tr.d, tr.rn
	n, H, W := b.N, b.H, b.W
	h, w := H/tr.scale, W/tr.scale
	if len(b.HR) != n*3*H*W || len(b.LR) != n*3*h*w {
		return 0, fmt.Errorf("cuda: RRDB batch of %d %dx%d: sizes do not match", n, H, W)
	}
	lr := make([]float32, len(b.LR))
	for i, v := range b.LR {
		lr[i] = (v + 1) / 2
	}
	dlr := rn.grow(&tr.rbufs.lr, len(lr))
	dhr := rn.grow(&tr.rbufs.hr, len(b.HR))
	rn.ck(d.Upload(dlr, lr))
	rn.ck(d.Upload(dhr, b.HR))
	rn.zero(rn.grads)
	tr.rrdb.forward(newDact(dlr, n, 3, h, w), dact{}, true)
	out := tr.rrdb.head()
	dout := rn.grow(&tr.rbufs.dout, out.b.N)
	part := rn.grow(&tr.rbufs.part, 2*LNP)
	lossB := rn.grow(&tr.rbufs.loss, 1)
	rn.ck(d.L1(out.b, dhr, dout, out.b.N, part, lossB))
	tr.rrdb.backward(newDact(dout, n, 3, H, W))
	if rn.err != nil {
		return 0, rn.err
	}
	res := []float32{0}
	if err := d.Download(res, lossB); err != nil {
		return 0, err
	}
	if math.IsNaN(float64(res[0])) || math.IsInf(float64(res[0]), 0) {
		return res[0], fmt.Errorf("cuda: rrdb loss is %v", res[0])
	}
	return res[0], nil
}

// RRDBAdamStep applies Adam to the device RRDB with its gradients (moments
// created on first use).
func (tr *Trainer) RRDBAdamStep(lr float64) error {
	n := tr.rn.vals.N
	if err := tr.rrdbMoments(); err != nil {
		return err
	}
	tr.rstep++
	return tr.d.Adam(tr.rn.vals, tr.rn.grads, tr.rAdamM, tr.rAdamV, n, lr, 0.9, 0.999, 1e-8, tr.rstep)
}

// RRDBGrads downloads the RRDB gradients (model.SRDiff.RRDBGrads order).
func (tr *Trainer) RRDBGrads(dst []float32) error { return tr.d.Download(dst, tr.rn.grads) }

// RRDBValues downloads the RRDB values (model.SRDiff.RRDBValues order).
func (tr *Trainer) RRDBValues(dst []float32) error { return tr.d.Download(dst, tr.rn.vals) }

// SetRRDBValues uploads RRDB values, e.g. the pretrained RRDB before diffusion training.
func (tr *Trainer) SetRRDBValues(src []float32) error {
	if len(src) != tr.rn.vals.N {
		return fmt.Errorf("cuda: %d values for %d RRDB parameters", len(src), tr.rn.vals.N)
	}
	return tr.d.Upload(tr.rn.vals, src)
}
