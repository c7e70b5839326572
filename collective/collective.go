package collective

import "context"

// Collective sums float32 vectors across the ranks of a generation.
type Collective interface {
	// AllReduce sums buf element-wise across ranks, in place. It never blocks
	// past ctx's deadline or the group's Timeout.
	AllReduce(ctx context.Context, buf []float32) error
}

// Single is the one-rank Collective: the sum over one rank is the buffer itself.
type Single struct{}

// AllReduce returns ctx.Err() and leaves buf unchanged.
func (Single) AllReduce(ctx context.Context, buf []float32) error { return ctx.Err() }

var (
	_ Collective = Single{}
	_ Collective = (*Ring)(nil)
)
