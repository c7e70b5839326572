package model

import (
	"math"
	"testing"
)

func TestL1PropagatesNaN(t *testing.T) {
	nan := float32(math.NaN())
	d := make([]float32, 3)
	if got := L1([]float32{1, nan, 0}, []float32{0, 0, 0}, d); !math.IsNaN(float64(got)) {
		t.Fatalf("a NaN prediction gave a finite loss %v: training would not stop", got)
	}
	if got := L1([]float32{1, -1, 0}, []float32{0, 0, 0}, d); got != float32(2.0/3) || d[0] != 1.0/3 || d[1] != -1.0/3 || d[2] != 0 {
		t.Fatalf("l1 = %v, grad %v", got, d)
	}
}
