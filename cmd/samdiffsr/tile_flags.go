package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/worker"
)

// tileFlags are the --tile and --overlap flags of sr and eval, checked once with the
// same rules for both (as config keys are), before any work starts.
type tileFlags struct {
	tile, overlap int
}

func (t *tileFlags) register(cmd *cobra.Command) {
	cmd.Flags().IntVar(&t.tile, "tile", worker.DefaultTile, fmt.Sprintf("LR tile side in pixels, at least %d; memory grows with it", worker.MinTile))
	// Default 0 keeps cobra from printing a second "(default ...)": unset means max(tile/8, 4).
	cmd.Flags().IntVar(&t.overlap, "overlap", 0, "minimum LR overlap between neighbouring tiles, 0 (abutting) to tile/2 (default max(tile/8, 4))")
}

// options returns the tiling the flags ask for, or a usage error (exit 2) naming the
// flag, the value and what is allowed.
func (t *tileFlags) options(cmd *cobra.Command) (tile int, overlap *int, err error) {
	name := cmd.Name()
	if t.tile < worker.MinTile {
		return 0, nil, &exitError{code: 2, msg: fmt.Sprintf("%s: --tile %d: must be at least %d LR pixels (default %d; memory grows with the tile)", name, t.tile, worker.MinTile, worker.DefaultTile)}
	}
	if !cmd.Flags().Changed("overlap") {
		return t.tile, nil, nil
	}
	if t.overlap < 0 || t.overlap > t.tile/2 {
		return 0, nil, &exitError{code: 2, msg: fmt.Sprintf("%s: --overlap %d: must be between 0 (abutting tiles) and half of --tile %d, i.e. %d; leave it out for max(tile/8, 4)", name, t.overlap, t.tile, t.tile/2)}
	}
	o := t.overlap
	return t.tile, &o, nil
}
