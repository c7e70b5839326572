package worker

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/samdiffsr/samdiffsr/model"
)

// trainState is a rank's whole training state in memory: every parameter value
// (RRDB and U-Net, in model.SRDiff.Params order), and the trained network's Adam
// step count and moments. It is what a rank that is behind receives from a peer
// (Broadcast over the collective) instead of reloading a checkpoint.
type trainState struct {
	// Stage is natsutil.TrainStageRRDB or TrainStageDiffusion; Step the steps applied.
	Stage    int
	Step     int64
	AdamStep int64
	Values   []float32
	M, V     []float32
}

// stateMagic starts an encoded trainState ("SDSR" + format 1).
const stateMagic = 0x5344_5352_0000_0001

const stateHeader = 4 * 8

// stateSize is the encoded size of m's state while training a network of nTrained
// values: the same on every rank of a generation (one configuration).
func stateSize(m *model.SRDiff, nTrained int) int {
	return stateHeader + 4*(len(m.RRDBValues())+len(m.UNetValues())+2*nTrained)
}

// snapshot copies the trainer's state out of its Net.
func (t *trainer) snapshot() (*trainState, error) {
	if err := t.net.PullValues(); err != nil {
		return nil, err
	}
	st := &trainState{Stage: stageIndex(t.stage), Step: int64(t.step)}
	for _, p := range t.m.Params() {
		st.Values = append(st.Values, p.Data...)
	}
	astep, ts, err := t.net.AdamState(t.rrdb)
	if err != nil {
		return nil, err
	}
	st.AdamStep = astep
	n := len(t.grads)
	st.M, st.V = make([]float32, n), make([]float32, n)
	if astep > 0 {
		m, v, err := momentsFlat(t.params, astep, ts)
		if err != nil {
			return nil, err
		}
		copy(st.M, m)
		copy(st.V, v)
	}
	return st, nil
}

// restore loads st into the trainer's Net (values, Adam state) and sets its step.
func (t *trainer) restore(st *trainState) error {
	if st.Stage != stageIndex(t.stage) {
		return fmt.Errorf("worker: state of stage %d given to the %s stage", st.Stage, t.stage)
	}
	o := 0
	for _, p := range t.m.Params() {
		if o+len(p.Data) > len(st.Values) {
			return fmt.Errorf("worker: state holds %d values, the model more", len(st.Values))
		}
		copy(p.Data, st.Values[o:o+len(p.Data)])
		o += len(p.Data)
	}
	if o != len(st.Values) {
		return fmt.Errorf("worker: state holds %d values, the model %d", len(st.Values), o)
	}
	if err := t.net.PushValues(); err != nil {
		return err
	}
	if len(st.M) != len(t.grads) || len(st.V) != len(t.grads) {
		return fmt.Errorf("worker: state holds %d/%d moments, the %s network %d values", len(st.M), len(st.V), t.stage, len(t.grads))
	}
	if err := t.net.LoadAdamState(t.rrdb, st.AdamStep, flatMoments(t.params, max(st.AdamStep, 1), st.M, st.V)); err != nil {
		return err
	}
	t.step = int(st.Step)
	return nil
}

// encode writes st into buf (stateSize bytes).
func (st *trainState) encode(buf []byte) error {
	want := stateHeader + 4*(len(st.Values)+len(st.M)+len(st.V))
	if len(buf) != want {
		return fmt.Errorf("worker: state buffer of %d bytes, want %d", len(buf), want)
	}
	le := binary.LittleEndian
	le.PutUint64(buf[0:], stateMagic)
	le.PutUint64(buf[8:], uint64(st.Stage))
	le.PutUint64(buf[16:], uint64(st.Step))
	le.PutUint64(buf[24:], uint64(st.AdamStep))
	o := stateHeader
	for _, s := range [][]float32{st.Values, st.M, st.V} {
		for _, v := range s {
			le.PutUint32(buf[o:], math.Float32bits(v))
			o += 4
		}
	}
	return nil
}

// decodeState reads a state of nValues values and nTrained moments each from buf.
func decodeState(buf []byte, nValues, nTrained int) (*trainState, error) {
	if len(buf) != stateHeader+4*(nValues+2*nTrained) {
		return nil, fmt.Errorf("worker: state of %d bytes, want %d", len(buf), stateHeader+4*(nValues+2*nTrained))
	}
	le := binary.LittleEndian
	if le.Uint64(buf) != stateMagic {
		return nil, fmt.Errorf("worker: not a training state (bad magic)")
	}
	st := &trainState{Stage: int(le.Uint64(buf[8:])), Step: int64(le.Uint64(buf[16:])), AdamStep: int64(le.Uint64(buf[24:]))}
	o := stateHeader
	read := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = math.Float32frombits(le.Uint32(buf[o:]))
			o += 4
		}
		return s
	}
	st.Values, st.M, st.V = read(nValues), read(nTrained), read(nTrained)
	return st, nil
}

// stageIndex is a stage's position (natsutil.TrainStageRRDB/Diffusion); stageName
// the reverse.
func stageIndex(stage string) int {
	if stage == StageDiffusion {
		return 1
	}
	return 0
}

func stageName(i int) string {
	if i >= 1 {
		return StageDiffusion
	}
	return StageRRDB
}
