//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"math"

	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/model"
)

type dDown struct {
	r1, r2 *dresnet
	down   *dconv
	out    dact
	dout   Buf
}

type dUp struct {
	r1, r2 *dresnet
	up     *dconvT
	cat    Buf
	upGrad Buf
	xc     int
}

// dUNet is model's unet on the device.
type dUNet struct {
	nt            *net
	dim           int
	dims          []int
	condProj      *dconvT
	mlp0, mlp2    *dlinear
	mlpAct, tAct  dmish
	downs         []*dDown
	mid1, mid2    *dresnet
	ups           []*dUp
	final         *dblock
	out           *dconv
	cond          dact
	emb, dmt, da1 Buf
	dfin, dlast   Buf
	embHost       []float32
	n             int
}

func newDUNet(nt *net, dim int, mults []int, condC, scale int) *dUNet {
	u := &dUNet{nt: nt, dim: dim}
	u.mlpAct.nt, u.tAct.nt = nt, nt
	u.dims = []int{3}
	for _, m := range mults {
		u.dims = append(u.dims, dim*m)
	}
	const p = "denoise_fn."
	u.condProj = newDconvT(nt, p+"cond_proj", condC, dim, 2*scale, scale, scale/2)
	u.mlp0 = newDlinear(nt, p+"mlp.0", dim, 4*dim)
	u.mlp2 = newDlinear(nt, p+"mlp.2", 4*dim, dim)
	L := len(mults)
	for i := 0; i < L; i++ {
		din, dout := u.dims[i], u.dims[i+1]
		pre := fmt.Sprintf("%sdowns.%d.", p, i)
		lv := &dDown{r1: newDresnet(nt, pre+"0", din, dout, dim), r2: newDresnet(nt, pre+"1", dout, dout, dim)}
		if i < L-1 {
			lv.down = newDconv(nt, pre+"2.conv.1", dout, dout, 3, 2, 1, true)
		}
		u.downs = append(u.downs, lv)
	}
	mid := u.dims[L]
	u.mid1 = newDresnet(nt, p+"mid_block1", mid, mid, dim)
	u.mid2 = newDresnet(nt, p+"mid_block2", mid, mid, dim)
	for j := 0; j < L-1; j++ {
		din, dout := u.dims[L-1-j], u.dims[L-j]
		pre := fmt.Sprintf("%sups.%d.", p, j)
		u.ups = append(u.ups, &dUp{
			r1: newDresnet(nt, pre+"0", 2*dout, din, dim),
			r2: newDresnet(nt, pre+"1", din, din, dim),
			up: newDconvT(nt, pre+"2.conv.0", din, din, 4, 2, 1),
		})
	}
	u.final = newDblock(nt, p+"final_conv.0", dim, dim)
	u.out = newDconv(nt, p+"final_conv.1", dim, 3, 1, 1, 0, false)
	return u
}

func (u *dUNet) forward(xt dact, t []int, feats dact, reuseCond bool) dact {
	nt, d := u.nt, u.nt.d
	n := xt.n
	u.n = n
	if cap(u.embHost) < n*u.dim {
		u.embHost = make([]float32, n*u.dim)
	}
	eh := u.embHost[:n*u.dim]
	model.SinusoidalEmb(t, u.dim, eh)
	emb := nt.grow(&u.emb, n*u.dim)
	nt.ck(d.Upload(emb, eh))
	h := u.mlp0.forward(emb, n)
	a := u.mlpAct.forward(h)
	temb := u.mlp2.forward(a, n)
	mt := u.tAct.forward(temb)
	if !reuseCond || u.cond.b.Ptr == 0 {
		u.cond = u.condProj.forward(feats)
	}
	x := xt
	for i, lv := range u.downs {
		x = lv.r1.forward(x, mt)
		x = lv.r2.forward(x, mt)
		if i == 0 {
			nt.add2(x, u.cond)
		}
		lv.out = x
		if lv.down != nil {
			x = lv.down.forward(x)
		}
	}
	x = u.mid1.forward(x, mt)
	x = u.mid2.forward(x, mt)
	L := len(u.downs)
	for j, lv := range u.ups {
		skip := u.downs[L-1-j].out
		cat := newDact(nt.grow(&lv.cat, n*(x.c+skip.c)*x.hw()), n, x.c+skip.c, x.h, x.w)
		lv.xc = x.c
		nt.ck(d.Copy2D(cat.b, cat.stride, x.b, x.stride, n, x.size()))
		nt.ck(d.Copy2D(cat.b.Off(x.size()), cat.stride, skip.b, skip.stride, n, skip.size()))
		x = lv.r1.forward(cat, mt)
		x = lv.r2.forward(x, mt)
		x = lv.up.forward(x)
	}
	x = u.final.forward(x)
	return u.out.forward(x)
}

func (u *dUNet) backward(dy dact) {
	nt := u.nt
	n := u.n
	dmt := nt.grow(&u.dmt, n*u.dim)
	nt.zero(dmt)
	fin := u.out.x
	dfin := newDact(nt.grow(&u.dfin, n*fin.size()), n, fin.c, fin.h, fin.w)
	nt.zero(dfin.b)
	u.out.backward(dy, &dfin)
	last := u.final.conv.x
	dx := newDact(nt.grow(&u.dlast, n*last.size()), n, last.c, last.h, last.w)
	nt.zero(dx.b)
	u.final.backward(dfin, &dx)
	L := len(u.downs)
	dskips := make([]dact, L)
	for j := len(u.ups) - 1; j >= 0; j-- {
		lv := u.ups[j]
		r2in := lv.up.x
		dUp := newDact(nt.grow(&lv.upGrad, n*r2in.size()), n, r2in.c, r2in.h, r2in.w)
		nt.zero(dUp.b)
		lv.up.backward(dx, &dUp)
		d1 := lv.r2.backward(dUp, dmt, true)
		dcat := lv.r1.backward(d1, dmt, true)
		dx = dcat.channels(0, lv.xc)
		dskips[L-1-j] = dcat.channels(lv.xc, dcat.c-lv.xc)
	}
	dx = u.mid2.backward(dx, dmt, true)
	dx = u.mid1.backward(dx, dmt, true)
	for i := L - 1; i >= 0; i-- {
		lv := u.downs[i]
		var dout dact
		if lv.down == nil {
			dout = dx
		} else {
			o := lv.out
			dout = newDact(nt.grow(&lv.dout, n*o.size()), n, o.c, o.h, o.w)
			nt.zero(dout.b)
			lv.down.backward(dx, &dout)
		}
		if i > 0 {
			nt.add2(dout, dskips[i])
		} else {
			u.condProj.backward(dout, nil)
		}
		d2 := lv.r2.backward(dout, dmt, true)
		dx = lv.r1.backward(d2, dmt, i > 0)
	}
	dtemb := u.tAct.backward(dmt)
	da1 := nt.grow(&u.da1, n*4*u.dim)
	nt.zero(da1)
	u.mlp2.backward(dtemb, da1)
	dh := u.mlpAct.backward(da1)
	u.mlp0.backward(dh, Buf{})
}

// dRDB and dRRDB: the RRDB (model's rrdbNet): the conditioning features for the
// diffusion step and, for pretraining, the x4 head and the backward pass.
type dRDB struct {
	nt     *net
	nf, gc int
	convs  [5]*dconv
	own    Buf  // dense buffer kept for backward (training)
	d      dact // dense tensor of the last forward
}

type dRRDB struct {
	nt                 *net
	nf, nb, gc         int
	convFirst, trunk   *dconv
	up1, up2, hr, last *dconv
	rdbs               [][3]*dRDB
	xin, s1, s2, tmp   Buf
	dense, bo0, bo1    Buf
	feaFirst, fea      dact
	u1, u2, outB       Buf
	c1, c2, hrOut, z   dact
	dz, dhr, dc2, du2  Buf
	dc1, du1, dfea     Buf
	dfirst, g1, g2     Buf
	gp0, gp1, ddense   Buf
}

func newDRRDB(nt *net, nf, nb, gc int) *dRRDB {
	r := &dRRDB{nt: nt, nf: nf, nb: nb, gc: gc}
	const p = "rrdb."
	r.convFirst = newDconv(nt, p+"conv_first", 3, nf, 3, 1, 1, false)
	for b := 0; b < nb; b++ {
		var blk [3]*dRDB
		for k := 0; k < 3; k++ {
			rd := &dRDB{nt: nt, nf: nf, gc: gc}
			for i := 0; i < 5; i++ {
				out := gc
				if i == 4 {
					out = nf
				}
				rd.convs[i] = newDconv(nt, fmt.Sprintf("%sRRDB_trunk.%d.RDB%d.conv%d", p, b, k+1, i+1), nf+i*gc, out, 3, 1, 1, false)
			}
			blk[k] = rd
		}
		r.rdbs = append(r.rdbs, blk)
	}
	r.trunk = newDconv(nt, p+"trunk_conv", nf, nf, 3, 1, 1, false)
	r.up1 = newDconv(nt, p+"upconv1", nf, nf, 3, 1, 1, false)
	r.up2 = newDconv(nt, p+"upconv2", nf, nf, 3, 1, 1, false)
	r.hr = newDconv(nt, p+"HRconv", nf, nf, 3, 1, 1, false)
	r.last = newDconv(nt, p+"conv_last", nf, 3, 3, 1, 1, false)
	return r
}

func (r *dRRDB) condChannels() int { return r.nf * ((r.nb + 1) / 3) }

func (rd *dRDB) forward(x dact, dense, tmp Buf, out dact) {
	nt, d := rd.nt, rd.nt.d
	D := newDact(dense, x.n, rd.nf+4*rd.gc, x.h, x.w)
	rd.d = D
	nt.ck(d.Copy2D(D.b, D.stride, x.b, x.stride, x.n, x.size()))
	for i := 0; i < 4; i++ {
		slot := D.channels(rd.nf+i*rd.gc, rd.gc)
		rd.convs[i].forwardInto(D.channels(0, rd.nf+i*rd.gc), slot)
		for s := 0; s < x.n; s++ {
			nt.ck(d.LeakyReLU(slot.sample(s), slot.size(), 0.2))
		}
	}
	t := newDact(tmp, x.n, rd.nf, x.h, x.w)
	rd.convs[4].forwardInto(D, t)
	nt.ck(d.Copy2D(out.b, out.stride, x.b, x.stride, x.n, x.size()))
	nt.ck(d.Axpy(0.2, t.b, out.b, x.n*x.size()))
}

// forward writes the conditioning features of x01 ((lr+1)/2, N×3×h×w) into cond
// (when cond.b.Ptr != 0); with train, every RDB keeps its dense tensor for backward.
func (r *dRRDB) forward(x dact, cond dact, train bool) {
	nt, d := r.nt, r.nt.d
	n, h, w := x.n, x.h, x.w
	fea := r.convFirst.forward(x)
	feaFirst := fea
	r.feaFirst = fea
	sz := n * r.nf * h * w
	s1 := newDact(nt.grow(&r.s1, sz), n, r.nf, h, w)
	s2 := newDact(nt.grow(&r.s2, sz), n, r.nf, h, w)
	tmp := nt.grow(&r.tmp, sz)
	dsz := n * (r.nf + 4*r.gc) * h * w
	shared := nt.grow(&r.dense, dsz)
	dense := func(rd *dRDB) Buf {
		if !train {
			return shared
		}
		return nt.grow(&rd.own, dsz)
	}
	bo := [2]*Buf{&r.bo0, &r.bo1}
	sel := 0
	copyCond := func(f dact) {
		if cond.b.Ptr == 0 {
			return
		}
		slot := cond.channels(sel*r.nf, r.nf)
		nt.ck(d.Copy2D(slot.b, slot.stride, f.b, f.stride, n, f.size()))
		sel++
	}
	for b, blk := range r.rdbs {
		out := newDact(nt.grow(bo[b%2], sz), n, r.nf, h, w)
		blk[0].forward(fea, dense(blk[0]), tmp, s1)
		blk[1].forward(s1, dense(blk[1]), tmp, s2)
		blk[2].forward(s2, dense(blk[2]), tmp, s1)
		nt.ck(d.Copy2D(out.b, out.stride, fea.b, fea.stride, n, fea.size()))
		nt.ck(d.Axpy(0.2, s1.b, out.b, sz))
		if b%3 == 2 {
			copyCond(out)
		}
		fea = out
	}
	t := r.trunk.forward(fea)
	nt.ck(d.Axpy(1, feaFirst.b, t.b, sz))
	r.fea = t
	if r.nb%3 == 2 {
		copyCond(t)
	}
}

// Trainer runs model.SRDiff's diffusion training step on the GPU: the frozen
// RRDB's features, the U-Net forward, the L1 loss and the U-Net backward, and
// Adam, with every U-Net value, gradient and moment resident on the device. The
// noisy input and target (x_t, n of METHOD §4) are built on the host with the
// model's own Schedule.QSample and uploaded.
type Trainer struct {
	d          *Device
	m          *model.SRDiff
	un, rn     *net
	unet       *dUNet
	rrdb       *dRRDB
	scale      int
	adamM      Buf
	adamV      Buf
	step       int64
	nparams    int
	x0, xt     []float32
	target, lr []float32
	// pred and sampleLoss: the last DiffusionLoss's prediction (on the host) and
	// per-sample losses.
	pred, sampleLoss []float32
	bufs             struct{ xt, target, lr, cond, dpred, part, loss Buf }
	rbufs            struct{ lr, hr, dout, part, loss Buf }
	rAdamM           Buf
	rAdamV           Buf
	rstep            int64
}

// NewTrainer builds the device networks for cfg with the values of m (its
// parameters' names and order) and uploads them.
func NewTrainer(d *Device, cfg configs.Config, m *model.SRDiff) (*Trainer, error) {
	scale := cfg.Data.Scale
	if scale == 0 {
		scale = 4
	}
	tr := &Trainer{d: d, m: m, scale: scale}
	var err error
	if tr.un, err = newNet(d, m.UNetParams()); err != nil {
		return nil, err
	}
	if tr.rn, err = newNet(d, m.RRDBParams()); err != nil {
		return nil, err
	}
	rc := cfg.Model.RRDB
	tr.rrdb = newDRRDB(tr.rn, rc.NF, rc.NB, rc.GC)
	tr.unet = newDUNet(tr.un, cfg.Model.UNet.Dim, cfg.Model.UNet.DimMults, tr.rrdb.condChannels(), scale)
	if err := errors.Join(tr.un.err, tr.rn.err); err != nil {
		return nil, err
	}
	tr.nparams = len(m.UNetValues())
	if err := d.Upload(tr.un.vals, m.UNetValues()); err != nil {
		return nil, err
	}
	if err := d.Upload(tr.rn.vals, m.RRDBValues()); err != nil {
		return nil, err
	}
	if tr.adamM, err = d.Alloc(tr.nparams); err != nil {
		return nil, err
	}
	if tr.adamV, err = d.Alloc(tr.nparams); err != nil {
		return nil, err
	}
	if err := errors.Join(d.Zero(tr.adamM), d.Zero(tr.adamV)); err != nil {
		return nil, err
	}
	return tr, nil
}

// DiffusionLoss is model.SRDiff.DiffusionLoss on the GPU: it overwrites the
// device U-Net gradients and returns the loss (which synchronises the stream).
func (tr *Trainer) DiffusionLoss(b *model.Batch, t []int, noise []float32) (float32, error) {
	m, d := tr.m, tr.d
	n, H, W := b.N, b.H, b.W
	hw := H * W
	if err := m.CheckSize(n, H, W); err != nil {
		return 0, fmt.Errorf("cuda: %w", err)
	}
	if len(t) != n || len(noise) != n*3*hw || len(b.HR) != n*3*hw || len(b.Up) != n*3*hw {
		return 0, fmt.Errorf("cuda: batch of %d %dx%d: sizes do not match", n, H, W)
	}
	mod := m.Modulation()
	if mod != model.ModNone && len(b.E) != n*hw {
		return 0, fmt.Errorf("cuda: batch E has %d values, want %d", len(b.E), n*hw)
	}
	h, w := H/tr.scale, W/tr.scale
	grow := func(s *[]float32, k int) []float32 {
		if cap(*s) < k {
			*s = make([]float32, k)
		}
		*s = (*s)[:k]
		return *s
	}
	x0, xt, target := grow(&tr.x0, n*3*hw), grow(&tr.xt, n*3*hw), grow(&tr.target, n*3*hw)
	model.Img2Res(x0, b.HR, b.Up)
	for s := 0; s < n; s++ {
		sl := func(a []float32) []float32 { return a[s*3*hw : (s+1)*3*hw] }
		var e []float32
		if mod != model.ModNone {
			e = b.E[s*hw : (s+1)*hw]
		}
		m.Schedule().QSample(mod, t[s], sl(x0), sl(noise), e, hw, sl(xt), sl(target))
	}
	lr := grow(&tr.lr, n*3*h*w)
	for i, v := range b.LR {
		lr[i] = (v + 1) / 2
	}
	un, rn := tr.un, tr.rn
	dxt := un.grow(&tr.bufs.xt, n*3*hw)
	dtg := un.grow(&tr.bufs.target, n*3*hw)
	dlr := rn.grow(&tr.bufs.lr, n*3*h*w)
	un.ck(d.Upload(dxt, xt))
	un.ck(d.Upload(dtg, target))
	rn.ck(d.Upload(dlr, lr))
	cc := tr.rrdb.condChannels()
	cond := newDact(rn.grow(&tr.bufs.cond, n*cc*h*w), n, cc, h, w)
	tr.rrdb.forward(newDact(dlr, n, 3, h, w), cond, false)
	un.zero(un.grads)
	pred := tr.unet.forward(newDact(dxt, n, 3, H, W), t, cond, false)
	dpred := un.grow(&tr.bufs.dpred, n*3*hw)
	part := un.grow(&tr.bufs.part, 2*LNP)
	lossB := un.grow(&tr.bufs.loss, 1)
	un.ck(d.L1(pred.b, dtg, dpred, n*3*hw, part, lossB))
	tr.unet.backward(newDact(dpred, n, 3, H, W))
	if err := errors.Join(un.err, rn.err); err != nil {
		return 0, err
	}
	out := []float32{0}
	if err := d.Download(out, lossB); err != nil {
		return 0, err
	}
	hp := grow(&tr.pred, n*3*hw)
	if err := d.Download(hp, pred.b); err != nil {
		return 0, err
	}
	tr.sampleLoss = model.SampleL1(hp, target, n, grow(&tr.sampleLoss, n))
	if math.IsNaN(float64(out[0])) || math.IsInf(float64(out[0]), 0) {
		return out[0], fmt.Errorf("cuda: diffusion loss is %v", out[0])
	}
	return out[0], nil
}

// SampleLosses is model.SRDiff.SampleLosses: the per-sample losses of the last
// DiffusionLoss, from its prediction downloaded to the host (a copy of the
// N×3×H×W output per step, small beside the step itself).
func (tr *Trainer) SampleLosses() []float32 { return tr.sampleLoss }

// AdamStep applies torch.optim.Adam (β 0.9/0.999, eps 1e-8, model.Adam's update)
// to the device U-Net with the device gradients.
func (tr *Trainer) AdamStep(lr float64) error {
	tr.step++
	return tr.d.Adam(tr.un.vals, tr.un.grads, tr.adamM, tr.adamV, tr.nparams, lr, 0.9, 0.999, 1e-8, tr.step)
}

// Grads downloads the U-Net gradients (model.SRDiff.UNetGrads order).
func (tr *Trainer) Grads(dst []float32) error { return tr.d.Download(dst, tr.un.grads) }

// Values downloads the U-Net values (model.SRDiff.UNetValues order).
func (tr *Trainer) Values(dst []float32) error { return tr.d.Download(dst, tr.un.vals) }

// SetValues uploads U-Net values (model.SRDiff.UNetValues order), e.g. after a
// checkpoint load; the Adam moments are kept.
func (tr *Trainer) SetValues(src []float32) error { return tr.setSlab(tr.un.vals, src) }

// SetGrads uploads U-Net gradients, e.g. after an all-reduce of Grads over ranks.
func (tr *Trainer) SetGrads(src []float32) error { return tr.setSlab(tr.un.grads, src) }

// AdamState downloads the Adam moments (exp_avg, exp_avg_sq in UNetValues order)
// and returns the step count, for checkpoints; LoadAdamState restores them.
func (tr *Trainer) AdamState(m, v []float32) (int64, error) {
	return tr.step, errors.Join(tr.d.Download(m, tr.adamM), tr.d.Download(v, tr.adamV))
}

// LoadAdamState uploads Adam moments and the step count.
func (tr *Trainer) LoadAdamState(step int64, m, v []float32) error {
	if err := errors.Join(tr.setSlab(tr.adamM, m), tr.setSlab(tr.adamV, v)); err != nil {
		return err
	}
	tr.step = step
	return nil
}

func (tr *Trainer) setSlab(dst Buf, src []float32) error {
	if len(src) != tr.nparams {
		return fmt.Errorf("cuda: %d values for %d U-Net parameters", len(src), tr.nparams)
	}
	return tr.d.Upload(dst, src)
}
