package worker

import (
	"math"
	"testing"
)

func TestLRSchedule(t *testing.T) {
	tests := []struct {
		kind        string
		step, total int
		every       int
		gamma, want float64
		wantErr     bool
	}{
		{kind: "constant", step: 123, total: 1000, want: 2e-4},
		{kind: "step", step: 199999, total: 400000, every: 200000, gamma: 0.5, want: 2e-4},
		{kind: "step", step: 200000, total: 400000, every: 200000, gamma: 0.5, want: 1e-4},
		{kind: "step", step: 399999, total: 400000, every: 200000, gamma: 0.5, want: 1e-4},
		{kind: "cosine", step: 0, total: 400000, want: 2e-4},
		{kind: "cosine", step: 200000, total: 400000, want: 1e-4},
		{kind: "cosine", step: 100000, total: 400000, want: 2e-4 * (1 + math.Sqrt2/2) / 2},
		{kind: "cosine", step: 400000, total: 400000, want: 0},
		{kind: "cosine", step: 10, total: 0, wantErr: true},
		{kind: "step", step: 10, total: 10, every: 0, wantErr: true},
		{kind: "linear", step: 1, total: 10, wantErr: true},
	}
	for _, tc := range tests {
		got, err := LRSchedule(tc.kind, 2e-4, tc.step, tc.total, tc.every, tc.gamma)
		if (err != nil) != tc.wantErr {
			t.Fatalf("%s step %d: err %v", tc.kind, tc.step, err)
		}
		if !tc.wantErr && math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("%s step %d = %g, want %g", tc.kind, tc.step, got, tc.want)
		}
	}
}
