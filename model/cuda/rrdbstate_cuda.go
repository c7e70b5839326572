//go:build cuda

package cuda

import "errors"

// The RRDB stage's counterparts of SetGrads, AdamState and LoadAdamState, for the
// all-reduce and for checkpoints of RRDB pretraining on the device.

// SetRRDBGrads uploads RRDB gradients (model.SRDiff.RRDBGrads order), e.g. after
// an all-reduce of RRDBGrads over ranks.
func (tr *Trainer) SetRRDBGrads(src []float32) error {
	if len(src) != tr.rn.grads.N {
		return errors.New("cuda: RRDB gradients of the wrong length")
	}
	return tr.d.Upload(tr.rn.grads, src)
}

// rrdbMoments allocates the RRDB Adam moments (zero) on first use.
func (tr *Trainer) rrdbMoments() error {
	if tr.rAdamM.Ptr != 0 {
		return nil
	}
	n := tr.rn.vals.N
	var err error
	if tr.rAdamM, err = tr.d.Alloc(n); err != nil {
		return err
	}
	if tr.rAdamV, err = tr.d.Alloc(n); err != nil {
		return err
	}
	return errors.Join(tr.d.Zero(tr.rAdamM), tr.d.Zero(tr.rAdamV))
}

// RRDBAdamState downloads the RRDB Adam moments (RRDBValues order) and returns
// the step count; before the first RRDBAdamStep the moments are zero.
func (tr *Trainer) RRDBAdamState(m, v []float32) (int64, error) {
	if len(m) != tr.rn.vals.N || len(v) != tr.rn.vals.N {
		return 0, errors.New("cuda: RRDB Adam moments of the wrong length")
	}
	if err := tr.rrdbMoments(); err != nil {
		return 0, err
	}
	return tr.rstep, errors.Join(tr.d.Download(m, tr.rAdamM), tr.d.Download(v, tr.rAdamV))
}

// LoadRRDBAdamState uploads RRDB Adam moments and the step count.
func (tr *Trainer) LoadRRDBAdamState(step int64, m, v []float32) error {
	if len(m) != tr.rn.vals.N || len(v) != tr.rn.vals.N {
		return errors.New("cuda: RRDB Adam moments of the wrong length")
	}
	if err := tr.rrdbMoments(); err != nil {
		return err
	}
	if err := errors.Join(tr.d.Upload(tr.rAdamM, m), tr.d.Upload(tr.rAdamV, v)); err != nil {
		return err
	}
	tr.rstep = step
	return nil
}
