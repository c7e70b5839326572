package collective

import (
	"sync/atomic"
	"time"
)

// Stats are a ring's cumulative counters.
type Stats struct {
	// Calls counts AllReduce and Broadcast calls.
	Calls int64
	// BytesSent and BytesReceived count frame bytes, headers included.
	BytesSent, BytesReceived int64
	// Wait is the time spent on the network and waiting for peers (the "wait
	// time in the collective"): Busy less the time spent adding received chunks
	// and checking broadcast checksums.
	Wait time.Duration
	// Busy is the total time spent inside calls.
	Busy time.Duration
}

// counters are the atomics behind Stats.
type counters struct {
	calls, sent, recv, wait, busy atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Calls:         c.calls.Load(),
		BytesSent:     c.sent.Load(),
		BytesReceived: c.recv.Load(),
		Wait:          time.Duration(c.wait.Load()),
		Busy:          time.Duration(c.busy.Load()),
	}
}
