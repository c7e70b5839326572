package model

import "fmt"

// resnetBlock is ResnetBlock(din, dout, time_emb_dim):
// h = block1(x); h += mlp(Mish(t))[:, :, None, None]; h = block2(h); return h + res_conv(x).
// The Mish of the time embedding is computed once by the U-Net and passed in.
type resnetBlock struct {
	be             Backend
	din, dout      int
	mlp            *linear // prefix.mlp.1
	block1, block2 *block
	res            *conv2d // prefix.res_conv, nil when din == dout
	x              act
	dx, dh, tg     []float32
}

func newResnetBlock(ps *paramSet, be Backend, ws *workspace, prefix string, din, dout, tdim int) *resnetBlock {
	r := &resnetBlock{be: be, din: din, dout: dout}
	r.mlp = newLinear(ps, be, prefix+".mlp.1", tdim, dout)
	r.block1 = newBlock(ps, be, ws, prefix+".block1", din, dout)
	r.block2 = newBlock(ps, be, ws, prefix+".block2", dout, dout)
	if din != dout {
		r.res = newConv2d(ps, be, ws, prefix+".res_conv", din, dout, 1, 1, 0, false)
	}
	return r
}

func (r *resnetBlock) forward(x act, mt []float32) act {
	r.x = x
	h := r.block1.forward(x)
	tv := r.mlp.forward(mt, x.n)
	for n := 0; n < x.n; n++ {
		r.be.AddPlaneBias(h.sample(n), tv[n*r.dout:(n+1)*r.dout], r.dout, h.hw())
	}
	y := r.block2.forward(h)
	if r.res != nil {
		rr := r.res.forward(x)
		r.be.Axpy(1, rr.data, y.data)
	} else {
		for n := 0; n < x.n; n++ {
			r.be.Axpy(1, x.sample(n), y.sample(n))
		}
	}
	return y
}

// backward accumulates parameter gradients and the gradient of Mish(t) into dmt,
// and returns the input gradient (in a buffer of the block) when needDx.
func (r *resnetBlock) backward(dy act, dmt []float32, needDx bool) act {
	x := r.x
	var dx act
	var dxp *act
	if needDx {
		dx = newAct(grow(&r.dx, x.n*x.size()), x.n, x.c, x.h, x.w)
		clear(dx.data)
		dxp = &dx
	}
	if r.res != nil {
		r.res.backward(dy, dxp)
	} else if needDx {
		for n := 0; n < x.n; n++ {
			r.be.Axpy(1, dy.sample(n), dx.sample(n))
		}
	}
	dh := newAct(grow(&r.dh, x.n*r.dout*dy.hw()), x.n, r.dout, dy.h, dy.w)
	clear(dh.data)
	r.block2.backward(dy, &dh)
	tg := grow(&r.tg, x.n*r.dout)
	clear(tg)
	for n := 0; n < x.n; n++ {
		r.be.PlaneSums(dh.sample(n), r.dout, dh.hw(), tg[n*r.dout:(n+1)*r.dout])
	}
	r.mlp.backward(tg, dmt)
	r.block1.backward(dh, dxp)
	return dx
}

type downLevel struct {
	r1, r2 *resnetBlock
	down   *conv2d // ReflectionPad2d(1) + Conv2d(3, stride 2); nil on the last level
	out    act
	dout   []float32
}

type upLevel struct {
	r1, r2 *resnetBlock
	up     *convT2d // ConvTranspose2d(4, 2, 1)
	cat    []float32
	upGrad []float32
	xc     int // channels of the path input inside the concatenation
}

// unet is the SRDiff conditional U-Net (METHOD §3); parameters are named like the
// reference's GaussianDiffusion state dict under "denoise_fn.".
type unet struct {
	be       Backend
	ws       *workspace
	dim      int
	dims     []int
	condC    int
	condProj *convT2d
	mlp0     *linear
	mlpAct   mish
	mlp2     *linear
	tAct     mish
	downs    []*downLevel
	mid1     *resnetBlock
	mid2     *resnetBlock
	ups      []*upLevel
	final    *block
	out      *conv2d
	params   []*Param
	flops    []*int64
	data     []float32 // all parameter values, contiguous in params order
	grad     []float32 // all gradients, contiguous in params order

	cond                 act
	emb, dmt, dtemb, da1 []float32
	dfin, dlast          []float32
	n                    int
}

// newUNet builds Unet(dim, out_dim=3, cond_dim=nf, dim_mults) with cond channels condC
// (nf·(nb+1)/3) and conditioning upsampled by ConvTranspose2d(condC, dim, 2s, s, s/2).
func newUNet(ps *paramSet, be Backend, ws *workspace, dim int, mults []int, condC, scale int) (*unet, error) {
	if dim < 4 || dim%2 != 0 {
		return nil, fmt.Errorf("model: unet dim %d must be even and at least 4", dim)
	}
	if len(mults) < 2 {
		return nil, fmt.Errorf("model: unet needs at least 2 dim_mults, got %v", mults)
	}
	u := &unet{be: be, ws: ws, dim: dim, condC: condC}
	u.dims = []int{3}
	for _, m := range mults {
		if m < 1 {
			return nil, fmt.Errorf("model: unet dim_mults %v must be positive", mults)
		}
		u.dims = append(u.dims, dim*m)
	}
	start := len(ps.params)
	startF := len(ps.flops)
	const p = "denoise_fn."
	u.condProj = newConvT2d(ps, be, ws, p+"cond_proj", condC, dim, 2*scale, scale, scale/2)
	u.mlp0 = newLinear(ps, be, p+"mlp.0", dim, 4*dim)
	u.mlp2 = newLinear(ps, be, p+"mlp.2", 4*dim, dim)
	u.mlpAct.be, u.tAct.be = be, be
	L := len(mults)
	for i := 0; i < L; i++ {
		din, dout := u.dims[i], u.dims[i+1]
		pre := fmt.Sprintf("%sdowns.%d.", p, i)
		lv := &downLevel{
			r1: newResnetBlock(ps, be, ws, pre+"0", din, dout, dim),
			r2: newResnetBlock(ps, be, ws, pre+"1", dout, dout, dim),
		}
		if i < L-1 {
			lv.down = newConv2d(ps, be, ws, pre+"2.conv.1", dout, dout, 3, 2, 1, true)
		}
		u.downs = append(u.downs, lv)
	}
	mid := u.dims[L]
	u.mid1 = newResnetBlock(ps, be, ws, p+"mid_block1", mid, mid, dim)
	u.mid2 = newResnetBlock(ps, be, ws, p+"mid_block2", mid, mid, dim)
	for j := 0; j < L-1; j++ {
		// reversed(in_out[1:]): level j pairs (dims[L-1-j], dims[L-j]).
		din, dout := u.dims[L-1-j], u.dims[L-j]
		pre := fmt.Sprintf("%sups.%d.", p, j)
		u.ups = append(u.ups, &upLevel{
			r1: newResnetBlock(ps, be, ws, pre+"0", 2*dout, din, dim),
			r2: newResnetBlock(ps, be, ws, pre+"1", din, din, dim),
			up: newConvT2d(ps, be, ws, pre+"2.conv.0", din, din, 4, 2, 1),
		})
	}
	u.final = newBlock(ps, be, ws, p+"final_conv.0", dim, dim)
	u.out = newConv2d(ps, be, ws, p+"final_conv.1", dim, 3, 1, 1, 0, false)
	u.params = ps.params[start:]
	u.flops = ps.flops[startF:]
	u.data, u.grad = ps.pack(start)
	return u, nil
}

// multiple is what H and W of the U-Net input must be divisible by.
func (u *unet) multiple() int { return 1 << (len(u.downs) - 1) }

// forward predicts the noise for x_t (N×3×H×W) at steps t given the selected RRDB
// features (N×condC×H/s×W/s). The result lives in a layer buffer until the next call.
// With reuseCond, cond_proj(feats) of the previous call is reused (sampling: the
// features do not change between steps).
func (u *unet) forward(xt act, t []int, feats act, reuseCond bool) act {
	n := xt.n
	u.n = n
	emb := grow(&u.emb, n*u.dim)
	SinusoidalEmb(t, u.dim, emb)
	h := u.mlp0.forward(emb, n)
	a := u.mlpAct.forward(h)
	temb := u.mlp2.forward(a, n)
	mt := u.tAct.forward(temb)

	if !reuseCond || u.cond.data == nil {
		u.cond = u.condProj.forward(feats)
	}
	cond := u.cond
	x := xt
	for i, lv := range u.downs {
		x = lv.r1.forward(x, mt)
		x = lv.r2.forward(x, mt)
		if i == 0 {
			u.be.Axpy(1, cond.data, x.data)
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
		cat := newAct(grow(&lv.cat, n*(x.c+skip.c)*x.hw()), n, x.c+skip.c, x.h, x.w)
		lv.xc = x.c
		for s := 0; s < n; s++ {
			cs := cat.sample(s)
			copy(cs[:x.size()], x.sample(s))
			copy(cs[x.size():], skip.sample(s))
		}
		x = lv.r1.forward(cat, mt)
		x = lv.r2.forward(x, mt)
		x = lv.up.forward(x)
	}
	x = u.final.forward(x)
	return u.out.forward(x)
}

// backward accumulates the gradients of all U-Net parameters for the output
// gradient dy of the last forward. The input gradient is not computed.
func (u *unet) backward(dy act) {
	n := u.n
	dmt := grow(&u.dmt, n*u.dim)
	clear(dmt)

	fin := u.out.x
	dfin := newAct(grow(&u.dfin, n*fin.size()), n, fin.c, fin.h, fin.w)
	clear(dfin.data)
	u.out.backward(dy, &dfin)
	last := u.final.conv.x
	dx := newAct(grow(&u.dlast, n*last.size()), n, last.c, last.h, last.w)
	clear(dx.data)
	u.final.backward(dfin, &dx)

	L := len(u.downs)
	dskips := make([]act, L)
	for j := len(u.ups) - 1; j >= 0; j-- {
		lv := u.ups[j]
		r2in := lv.up.x
		dUp := newAct(grow(&lv.upGrad, n*r2in.size()), n, r2in.c, r2in.h, r2in.w)
		clear(dUp.data)
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
		var dout act
		if lv.down == nil {
			dout = dx // mid1's input-gradient buffer, ours to add to
		} else {
			o := lv.out
			dout = newAct(grow(&lv.dout, n*o.size()), n, o.c, o.h, o.w)
			clear(dout.data)
			lv.down.backward(dx, &dout)
		}
		if i > 0 {
			sk := dskips[i]
			for s := 0; s < n; s++ {
				u.be.Axpy(1, sk.sample(s), dout.sample(s))
			}
		} else {
			u.condProj.backward(dout, nil)
		}
		d2 := lv.r2.backward(dout, dmt, true)
		dx = lv.r1.backward(d2, dmt, i > 0)
	}
	dtemb := u.tAct.backward(dmt)
	da1 := grow(&u.da1, n*4*u.dim)
	clear(da1)
	u.mlp2.backward(dtemb, da1)
	dh := u.mlpAct.backward(da1)
	u.mlp0.backward(dh, nil)
}
