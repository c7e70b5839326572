package model

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Adam is torch.optim.Adam (β1 0.9, β2 0.999, eps 1e-8, no weight decay, no amsgrad)
// with PyTorch's update order:
//
//	m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  k = step count
//	p -= lr/(1-β1^k) · m / (√v/√(1-β2^k) + eps)
//
// Moments are kept per parameter name and created (zero) on first use.
type Adam struct {
	Beta1, Beta2, Eps float64
	step              int64
	m, v              map[string][]float32
}

// NewAdam returns Adam with PyTorch's defaults.
func NewAdam() *Adam {
	return &Adam{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, m: map[string][]float32{}, v: map[string][]float32{}}
}

// Steps is the number of Step calls so far (PyTorch's per-parameter "step").
func (a *Adam) Steps() int64 { return a.step }

// Step applies one update to params from their Grad (already summed or averaged
// over ranks by the caller) with learning rate lr.
func (a *Adam) Step(params []*Param, lr float64) error {
	for _, p := range params {
		if len(p.Grad) != len(p.Data) {
			return fmt.Errorf("model: adam: parameter %q has %d grads for %d values", p.Name, len(p.Grad), len(p.Data))
		}
		if m, ok := a.m[p.Name]; ok && len(m) != len(p.Data) {
			return fmt.Errorf("model: adam: state of %q has %d values, parameter %d", p.Name, len(m), len(p.Data))
		}
	}
	a.step++
	k := float64(a.step)
	bc1 := 1 - math.Pow(a.Beta1, k)
	bc2s := math.Sqrt(1 - math.Pow(a.Beta2, k))
	stepSize := float32(lr / bc1)
	b1, b2 := float32(a.Beta1), float32(a.Beta2)
	eps := float32(a.Eps)
	bc2 := float32(bc2s)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for _, p := range params {
		m, ok := a.m[p.Name]
		if !ok {
			m = make([]float32, len(p.Data))
			a.m[p.Name] = m
			a.v[p.Name] = make([]float32, len(p.Data))
		}
		v := a.v[p.Name]
		n := len(p.Data)
		chunks := 1 + n/65536
		if chunks > workers {
			chunks = workers
		}
		for c := 0; c < chunks; c++ {
			lo, hi := c*n/chunks, (c+1)*n/chunks
			wg.Add(1)
			go func(d, g, m, v []float32) {
				defer wg.Done()
				for i := range d {
					gi := g[i]
					m[i] += (gi - m[i]) * (1 - b1)
					v[i] = v[i]*b2 + (1-b2)*gi*gi
					den := float32(math.Sqrt(float64(v[i])))/bc2 + eps
					d[i] -= stepSize * (m[i] / den)
				}
			}(p.Data[lo:hi], p.Grad[lo:hi], m[lo:hi], v[lo:hi])
		}
		wg.Wait()
	}
	return nil
}

// State exports the moments as named tensors "<param>.exp_avg" and
// "<param>.exp_avg_sq" (shaped like the parameters, copies) and the step count.
func (a *Adam) State(params []*Param) (step int64, ts []Tensor) {
	for _, p := range params {
		m, ok := a.m[p.Name]
		if !ok {
			continue
		}
		ts = append(ts,
			Tensor{Name: p.Name + ".exp_avg", Shape: append([]int(nil), p.Shape...), Data: append([]float32(nil), m...)},
			Tensor{Name: p.Name + ".exp_avg_sq", Shape: append([]int(nil), p.Shape...), Data: append([]float32(nil), a.v[p.Name]...)})
	}
	return a.step, ts
}

// Load restores the step count and the moments exported by State for params.
// Every parameter must have both moments with its shape.
func (a *Adam) Load(params []*Param, step int64, ts []Tensor) error {
	by := make(map[string]Tensor, len(ts))
	for _, t := range ts {
		by[t.Name] = t
	}
	m := make(map[string][]float32, len(params))
	v := make(map[string][]float32, len(params))
	for _, p := range params {
		for _, suf := range []string{".exp_avg", ".exp_avg_sq"} {
			t, ok := by[p.Name+suf]
			if !ok {
				return fmt.Errorf("model: adam state lacks %q", p.Name+suf)
			}
			if !sameShape(t.Shape, p.Shape) || len(t.Data) != len(p.Data) {
				return fmt.Errorf("model: adam state %q has shape %v, want %v", t.Name, t.Shape, p.Shape)
			}
			c := append([]float32(nil), t.Data...)
			if suf == ".exp_avg" {
				m[p.Name] = c
			} else {
				v[p.Name] = c
			}
		}
	}
	a.m, a.v, a.step = m, v, step
	return nil
}
