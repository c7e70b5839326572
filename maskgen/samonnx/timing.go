package samonnx

import (
	"runtime"
	"sync"
	"time"
)

// phase names a part of Segment for phaseTimes.
type phase int

const (
	phasePreprocess phase = iota
	phaseEncoder
	phaseDecoder
	phaseFilter
	phaseNMS
	phasePaint
	numPhases
)

// phaseTimes is the time spent in each phase of Segment, summed over goroutines.
// With a clock set (benchmarks: the calling thread's CPU time), the goroutines
// that run phases lock their OS threads so that the clock follows them.
type phaseTimes struct {
	mu    sync.Mutex
	d     [numPhases]time.Duration
	clock func() time.Duration // nil: wall time
}

// start reads the clock; a nil receiver reads nothing.
func (p *phaseTimes) start() time.Duration {
	switch {
	case p == nil:
		return 0
	case p.clock != nil:
		return p.clock()
	}
	return time.Duration(time.Now().UnixNano())
}

// since adds the time since start to phase ph; a nil receiver does nothing.
func (p *phaseTimes) since(ph phase, start time.Duration) {
	if p == nil {
		return
	}
	el := p.start() - start
	p.mu.Lock()
	p.d[ph] += el
	p.mu.Unlock()
}

// pin locks the calling goroutine to its thread while timing with a clock; call
// the returned function when done.
func (p *phaseTimes) pin() func() {
	if p == nil || p.clock == nil {
		return func() {}
	}
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}
