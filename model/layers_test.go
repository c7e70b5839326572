package model

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func randSlice(rng *rand.Rand, n int, scale float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64() * scale)
	}
	return s
}

func dot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// fdCheck compares analytic gradients grad of f with central finite differences
// at up to k coordinates of x (all when len(x) ≤ k).
func fdCheck(t *testing.T, name string, rng *rand.Rand, x, grad []float32, f func() float64, k int, eps, tol float64) {
	t.Helper()
	idx := make([]int, 0, k)
	if len(x) <= k {
		for i := range x {
			idx = append(idx, i)
		}
	} else {
		for len(idx) < k {
			idx = append(idx, rng.IntN(len(x)))
		}
	}
	bad := 0
	for _, i := range idx {
		orig := x[i]
		xp, xm := orig+float32(eps), orig-float32(eps)
		x[i] = xp
		fp := f()
		x[i] = xm
		fm := f()
		x[i] = orig
		num := (fp - fm) / (float64(xp) - float64(xm))
		an := float64(grad[i])
		if math.Abs(num-an) > tol*(1+math.Abs(num)) {
			if bad < 5 {
				t.Errorf("%s[%d]: analytic %.6g, finite difference %.6g", name, i, an, num)
			}
			bad++
		}
	}
}

func testSetup(seed uint64) (*paramSet, *CPU, *workspace, *rand.Rand) {
	rng := rand.New(rand.NewPCG(seed, 99))
	return &paramSet{rng: rand.New(rand.NewPCG(seed, 1))}, NewCPU(), &workspace{}, rng
}

func TestConv2dGradients(t *testing.T) {
	cases := []struct {
		name                    string
		n, c, co, h, w, k, s, p int
		reflect                 bool
	}{
		{"3x3 zero pad", 2, 3, 4, 6, 7, 3, 1, 1, false},
		{"3x3 stride 2 zero pad", 2, 3, 4, 7, 6, 3, 2, 1, false},
		{"3x3 reflect", 2, 3, 4, 6, 5, 3, 1, 1, true},
		{"3x3 stride 2 reflect (Downsample)", 2, 3, 2, 8, 6, 3, 2, 1, true},
		{"1x1", 2, 5, 3, 4, 3, 1, 1, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps, be, ws, rng := testSetup(1)
			l := newConv2d(ps, be, ws, "c", tc.c, tc.co, tc.k, tc.s, tc.p, tc.reflect)
			x := randSlice(rng, tc.n*tc.c*tc.h*tc.w, 1)
			xa := newAct(x, tc.n, tc.c, tc.h, tc.w)
			y := l.forward(xa)
			r := randSlice(rng, len(y.data), 1)
			f := func() float64 { return dot(l.forward(xa).data, r) }
			l.forward(xa)
			dx := newAct(make([]float32, len(x)), tc.n, tc.c, tc.h, tc.w)
			l.backward(newAct(r, y.n, y.c, y.h, y.w), &dx)
			fdCheck(t, "dx", rng, x, dx.data, f, 40, 1e-2, 2e-3)
			fdCheck(t, "dw", rng, l.w.Data, l.w.Grad, f, 40, 1e-2, 2e-3)
			fdCheck(t, "db", rng, l.b.Data, l.b.Grad, f, 40, 1e-2, 2e-3)
		})
	}
}

func TestConvT2dGradients(t *testing.T) {
	cases := []struct {
		name                    string
		n, c, co, h, w, k, s, p int
	}{
		{"Upsample 4/2/1", 2, 3, 2, 3, 4, 4, 2, 1},
		{"cond_proj 8/4/2", 2, 4, 3, 3, 2, 8, 4, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps, be, ws, rng := testSetup(2)
			l := newConvT2d(ps, be, ws, "u", tc.c, tc.co, tc.k, tc.s, tc.p)
			x := randSlice(rng, tc.n*tc.c*tc.h*tc.w, 1)
			xa := newAct(x, tc.n, tc.c, tc.h, tc.w)
			y := l.forward(xa)
			if want := (tc.h-1)*tc.s - 2*tc.p + tc.k; y.h != want {
				t.Fatalf("output height %d, want %d", y.h, want)
			}
			r := randSlice(rng, len(y.data), 1)
			f := func() float64 { return dot(l.forward(xa).data, r) }
			l.forward(xa)
			dx := newAct(make([]float32, len(x)), tc.n, tc.c, tc.h, tc.w)
			l.backward(newAct(r, y.n, y.c, y.h, y.w), &dx)
			fdCheck(t, "dx", rng, x, dx.data, f, 40, 1e-2, 2e-3)
			fdCheck(t, "dw", rng, l.w.Data, l.w.Grad, f, 40, 1e-2, 2e-3)
			fdCheck(t, "db", rng, l.b.Data, l.b.Grad, f, 40, 1e-2, 2e-3)
		})
	}
}

// gorgoniaConv evaluates y = Conv2d(x, w) (no bias) with gorgonia and the gradients
// of <y, r> with respect to x and w.
func gorgoniaConv(t *testing.T, x []float32, n, c, h, w int, wt []float32, co, k, pad, stride int, r []float32) (y, dx, dw []float32) {
	t.Helper()
	g := G.NewGraph()
	xT := tensor.New(tensor.WithShape(n, c, h, w), tensor.WithBacking(append([]float32(nil), x...)))
	wT := tensor.New(tensor.WithShape(co, c, k, k), tensor.WithBacking(append([]float32(nil), wt...)))
	rT := tensor.New(tensor.WithShape(len(r)), tensor.WithBacking(append([]float32(nil), r...)))
	xN := G.NewTensor(g, tensor.Float32, 4, G.WithShape(n, c, h, w), G.WithName("x"), G.WithValue(xT))
	wN := G.NewTensor(g, tensor.Float32, 4, G.WithShape(co, c, k, k), G.WithName("w"), G.WithValue(wT))
	rN := G.NewVector(g, tensor.Float32, G.WithShape(len(r)), G.WithName("r"), G.WithValue(rT))
	yN, err := G.Conv2d(xN, wN, tensor.Shape{k, k}, []int{pad, pad}, []int{stride, stride}, []int{1, 1})
	if err != nil {
		t.Fatal(err)
	}
	flat, err := G.Reshape(yN, tensor.Shape{len(r)})
	if err != nil {
		t.Fatal(err)
	}
	cost, err := G.Mul(flat, rN)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Grad(cost, xN, wN)
	if err != nil {
		t.Fatal(err)
	}
	var yv, dxv, dwv G.Value
	G.Read(yN, &yv)
	G.Read(grads[0], &dxv)
	G.Read(grads[1], &dwv)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	get := func(v G.Value) []float32 {
		return append([]float32(nil), v.Data().([]float32)...)
	}
	return get(yv), get(dxv), get(dwv)
}

func maxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// TestConv2dMatchesGorgonia checks forward, input and weight gradients against
// gorgonia's Conv2d, and the fused reflection padding against an explicit
// ReflectionPad2d followed by gorgonia's unpadded Conv2d.
func TestConv2dMatchesGorgonia(t *testing.T) {
	cases := []struct {
		name                    string
		n, c, co, h, w, k, s, p int
		reflect                 bool
	}{
		{"3x3 pad 1", 2, 3, 5, 9, 8, 3, 1, 1, false},
		{"3x3 stride 2 pad 1", 2, 4, 3, 9, 10, 3, 2, 1, false},
		{"1x1", 1, 6, 3, 5, 5, 1, 1, 0, false},
		{"reflect 3x3", 2, 3, 4, 7, 6, 3, 1, 1, true},
		{"reflect 3x3 stride 2", 2, 3, 4, 8, 8, 3, 2, 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps, be, ws, rng := testSetup(3)
			l := newConv2d(ps, be, ws, "c", tc.c, tc.co, tc.k, tc.s, tc.p, tc.reflect)
			clear(l.b.Data)
			x := randSlice(rng, tc.n*tc.c*tc.h*tc.w, 1)
			y := l.forward(newAct(x, tc.n, tc.c, tc.h, tc.w))
			r := randSlice(rng, len(y.data), 1)
			dx := newAct(make([]float32, len(x)), tc.n, tc.c, tc.h, tc.w)
			l.backward(newAct(r, y.n, y.c, y.h, y.w), &dx)

			gx, gh, gw, gp := x, tc.h, tc.w, tc.p
			if tc.reflect {
				gx = reflectPad(x, tc.n, tc.c, tc.h, tc.w, tc.p)
				gh, gw, gp = tc.h+2*tc.p, tc.w+2*tc.p, 0
			}
			gy, gdx, gdw := gorgoniaConv(t, gx, tc.n, tc.c, gh, gw, l.w.Data, tc.co, tc.k, gp, tc.s, r)
			if tc.reflect {
				gdx = reflectPadBackward(gdx, tc.n, tc.c, tc.h, tc.w, tc.p)
			}
			if d := maxDiff(y.data, gy); d > 1e-4 {
				t.Errorf("forward differs from gorgonia by %g", d)
			}
			if d := maxDiff(dx.data, gdx); d > 1e-4 {
				t.Errorf("input gradient differs from gorgonia by %g", d)
			}
			if d := maxDiff(l.w.Grad, gdw); d > 1e-3 {
				t.Errorf("weight gradient differs from gorgonia by %g", d)
			}
		})
	}
}

// TestConvT2dMatchesGorgonia uses the adjoint identity <conv(q; W), x> = <q, convT(x; W)>:
// gorgonia's input gradient of the convolution is our transposed convolution, its
// weight gradient our transposed-conv weight gradient, its output our input gradient.
func TestConvT2dMatchesGorgonia(t *testing.T) {
	for _, tc := range []struct{ c, co, h, w, k, s, p int }{{3, 2, 4, 3, 4, 2, 1}, {5, 3, 3, 3, 8, 4, 2}} {
		ps, be, ws, rng := testSetup(4)
		n := 2
		l := newConvT2d(ps, be, ws, "u", tc.c, tc.co, tc.k, tc.s, tc.p)
		clear(l.b.Data)
		x := randSlice(rng, n*tc.c*tc.h*tc.w, 1)
		y := l.forward(newAct(x, n, tc.c, tc.h, tc.w))
		q := randSlice(rng, len(y.data), 1)
		dx := newAct(make([]float32, len(x)), n, tc.c, tc.h, tc.w)
		l.backward(newAct(q, y.n, y.c, y.h, y.w), &dx)
		gy, gdq, gdw := gorgoniaConv(t, q, n, tc.co, y.h, y.w, l.w.Data, tc.c, tc.k, tc.p, tc.s, x)
		if d := maxDiff(y.data, gdq); d > 1e-4 {
			t.Errorf("k%d: forward differs from gorgonia's conv input gradient by %g", tc.k, d)
		}
		if d := maxDiff(dx.data, gy); d > 1e-4 {
			t.Errorf("k%d: input gradient differs from gorgonia's conv by %g", tc.k, d)
		}
		if d := maxDiff(l.w.Grad, gdw); d > 1e-3 {
			t.Errorf("k%d: weight gradient differs from gorgonia by %g", tc.k, d)
		}
	}
}

func TestLinearGradients(t *testing.T) {
	ps, be, _, rng := testSetup(5)
	l := newLinear(ps, be, "l", 5, 7)
	n := 3
	x := randSlice(rng, n*5, 1)
	r := randSlice(rng, n*7, 1)
	f := func() float64 { return dot(l.forward(x, n), r) }
	l.forward(x, n)
	dx := make([]float32, len(x))
	l.backward(r, dx)
	fdCheck(t, "dx", rng, x, dx, f, 40, 1e-2, 1e-3)
	fdCheck(t, "dw", rng, l.w.Data, l.w.Grad, f, 40, 1e-2, 1e-3)
	fdCheck(t, "db", rng, l.b.Data, l.b.Grad, f, 40, 1e-2, 1e-3)
}

func TestMishGradient(t *testing.T) {
	_, be, _, rng := testSetup(6)
	z := randSlice(rng, 200, 3)
	z = append(z, -30, -10, 0, 19.9, 20.5, 40)
	m := &mish{be: be}
	r := randSlice(rng, len(z), 1)
	for i, v := range z {
		want := float64(v) * math.Tanh(math.Log1p(math.Exp(float64(v))))
		if got := m.forward(z)[i]; math.Abs(float64(got)-want) > 1e-5*(1+math.Abs(want)) {
			t.Errorf("mish(%g) = %g, want %g", v, got, want)
		}
	}
	f := func() float64 { return dot((&mish{be: be}).forward(z), r) }
	m.forward(z)
	dz := m.backward(append([]float32(nil), r...))
	fdCheck(t, "dz", rng, z, dz, f, len(z), 1e-3, 2e-3)
}

func TestLeakyReLUGradient(t *testing.T) {
	_, be, _, rng := testSetup(7)
	x := randSlice(rng, 300, 1)
	r := randSlice(rng, len(x), 1)
	f := func() float64 {
		y := append([]float32(nil), x...)
		be.LeakyReLU(y, 0.2)
		return dot(y, r)
	}
	y := append([]float32(nil), x...)
	be.LeakyReLU(y, 0.2)
	dy := append([]float32(nil), r...)
	be.LeakyReLUGrad(y, dy, 0.2)
	fdCheck(t, "dx", rng, x, dy, f, len(x), 1e-3, 1e-3)
}

func TestUpsampleGradient(t *testing.T) {
	_, be, _, rng := testSetup(8)
	planes, h, w := 4, 3, 5
	x := randSlice(rng, planes*h*w, 1)
	r := randSlice(rng, planes*4*h*w, 1)
	y := make([]float32, len(r))
	f := func() float64 { be.Upsample2x(x, y, planes, h, w); return dot(y, r) }
	f()
	if y[0] != x[0] || y[1] != x[0] || y[2*w] != x[0] || y[2*w+1] != x[0] || y[2] != x[1] {
		t.Error("nearest x2 upsampling misplaces values")
	}
	dx := make([]float32, len(x))
	be.Upsample2xGrad(r, dx, planes, h, w)
	fdCheck(t, "dx", rng, x, dx, f, len(x), 1e-2, 1e-3)
}

// TestReflectPadGradient checks the standalone ReflectionPad2d pair used as the
// independent route in TestConv2dMatchesGorgonia.
func TestReflectPadGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	n, c, h, w, p := 2, 2, 4, 5, 1
	x := randSlice(rng, n*c*h*w, 1)
	y := reflectPad(x, n, c, h, w, p)
	// ReflectionPad2d(1): padded row 0 is input row 1, and a row [a b c ...] becomes [b a b c ...].
	if y[0] != x[w+1] || y[1] != x[w] || y[2] != x[w+1] || y[(w+2)+1] != x[0] {
		t.Errorf("reflect pad corner/edge wrong: %v vs %v", y[:w+2], x[:w])
	}
	r := randSlice(rng, len(y), 1)
	dx := reflectPadBackward(r, n, c, h, w, p)
	f := func() float64 { return dot(reflectPad(x, n, c, h, w, p), r) }
	fdCheck(t, "dx", rng, x, dx, f, len(x), 1e-2, 1e-3)
}

// TestSinusoidalEmbedding checks SinusoidalPosEmb(64): sin first, f_i = exp(-i·ln(10000)/31).
func TestSinusoidalEmbedding(t *testing.T) {
	out := make([]float32, 2*64)
	SinusoidalEmb([]int{0, 57}, 64, out)
	for i := 0; i < 32; i++ {
		if out[i] != 0 || out[32+i] != 1 {
			t.Fatalf("t=0 embedding wrong at %d: %g %g", i, out[i], out[32+i])
		}
		f := math.Exp(-float64(i) * math.Log(10000) / 31)
		if s := math.Sin(57 * f); math.Abs(float64(out[64+i])-s) > 1e-5 {
			t.Errorf("sin(57·f_%d) = %g, want %g", i, out[64+i], s)
		}
		if c := math.Cos(57 * f); math.Abs(float64(out[96+i])-c) > 1e-5 {
			t.Errorf("cos(57·f_%d) = %g, want %g", i, out[96+i], c)
		}
	}
}

func TestExpf(t *testing.T) {
	for x := float32(-87); x <= 20; x += 0.01 {
		want := math.Exp(float64(x))
		if got := float64(expf(x)); math.Abs(got-want) > 3e-7*want {
			t.Fatalf("expf(%g) = %g, want %g", x, got, want)
		}
	}
	if expf(-100) != 0 {
		t.Error("expf(-100) != 0")
	}
}

// TestGemm checks CPU.Gemm (including its split over goroutines) against a naive
// product for every transpose combination, with alpha and beta.
func TestGemm(t *testing.T) {
	be := NewCPU()
	rng := rand.New(rand.NewPCG(10, 10))
	for _, sz := range [][3]int{{7, 5, 3}, {70, 300, 120}, {300, 40, 200}} {
		m, n, k := sz[0], sz[1], sz[2]
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				a := randSlice(rng, m*k, 1)
				b := randSlice(rng, k*n, 1)
				c := randSlice(rng, m*n, 1)
				want := make([]float64, m*n)
				for i := 0; i < m; i++ {
					for j := 0; j < n; j++ {
						var s float64
						for p := 0; p < k; p++ {
							av, bv := a[i*k+p], b[p*n+j]
							if ta {
								av = a[p*m+i]
							}
							if tb {
								bv = b[j*k+p]
							}
							s += float64(av) * float64(bv)
						}
						want[i*n+j] = 0.5*s + 2*float64(c[i*n+j])
					}
				}
				lda, ldb := k, n
				if ta {
					lda = m
				}
				if tb {
					ldb = k
				}
				be.Gemm(ta, tb, m, n, k, 0.5, a, lda, b, ldb, 2, c, n)
				for i := range want {
					if math.Abs(float64(c[i])-want[i]) > 1e-3*(1+math.Abs(want[i])) {
						t.Fatalf("%dx%dx%d ta=%v tb=%v: c[%d] = %g, want %g", m, n, k, ta, tb, i, c[i], want[i])
					}
				}
			}
		}
	}
}
