package collective

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Ring is one rank's member of a generation's ring, formed by [Endpoint.Join].
// It sends on the connection it dialed to the next rank and receives on the one
// it accepted from the previous rank. One operation runs at a time (calls are
// serialised); Stats, SetStep and Close may be called at any time.
//
// After any error the Ring is broken: its connections are closed (so that its
// neighbours fail at once too) and every later call returns an error at once.
type Ring struct {
	g          Group
	log        *slog.Logger
	next, prev net.Conn
	step       atomic.Int64
	timeout    atomic.Int64 // the Timeout of the next operations (SetTimeout)
	stats      counters

	mu      sync.Mutex // one operation at a time; guards what follows
	seq     uint64
	rplan   *plan
	rlen    int
	bplan   *plan
	bkey    [2]int
	scratch []float32 // a received all-reduce chunk, before it is added

	bmu    sync.Mutex
	broken error
}

func newRing(g Group, next, prev net.Conn, log *slog.Logger) *Ring {
	r := &Ring{g: g, log: log, next: next, prev: prev, rlen: -1}
	r.timeout.Store(int64(g.Timeout))
	if g.World > 1 {
		r.scratch = make([]float32, g.ChunkBytes/4)
	}
	return r
}

// Group is the group the ring was formed for, with defaults filled in.
func (r *Ring) Group() Group { return r.g }

// SetStep sets the training step every subsequent frame carries; neighbours at
// different steps fail their call (they are out of lockstep).
func (r *Ring) SetStep(step int64) { r.step.Store(step) }

// SetTimeout changes the bound on every blocking read and write of the following
// operations (Group.Timeout until called): for an operation that a peer is known
// to reach late, e.g. after the writer rank's validation. All ranks should set the
// same value.
func (r *Ring) SetTimeout(d time.Duration) {
	if d <= 0 {
		d = r.g.Timeout
	}
	r.timeout.Store(int64(d))
}

// Stats returns the ring's cumulative counters.
func (r *Ring) Stats() Stats { return r.stats.snapshot() }

// Close closes the ring's connections (not the Endpoint). It aborts a call in
// progress, and later calls fail.
func (r *Ring) Close() error {
	r.setBroken(fmt.Errorf("collective: generation %d: the ring is closed", r.g.Generation))
	if r.next != nil {
		r.next.Close()
		r.prev.Close()
	}
	return nil
}

func (r *Ring) setBroken(err error) {
	r.bmu.Lock()
	if r.broken == nil {
		r.broken = err
	}
	r.bmu.Unlock()
}

func (r *Ring) brokenErr() error {
	r.bmu.Lock()
	defer r.bmu.Unlock()
	if r.broken != nil {
		return fmt.Errorf("collective: generation %d: the ring is broken (close it and join the next generation): %w", r.g.Generation, r.broken)
	}
	return nil
}

// AllReduce sums buf element-wise across the ranks, in place, with the ring
// algorithm: bucket by bucket, reduce-scatter then all-gather, each rank sending
// 2(W-1)/W of the buffer. Every rank must pass a buffer of the same length. The
// result is bit-identical on every rank and from run to run for a given world
// size and group. It never blocks past ctx's deadline or, per frame, the group's
// Timeout.
func (r *Ring) AllReduce(ctx context.Context, buf []float32) error {
	if err := r.brokenErr(); err != nil {
		return err
	}
	r.stats.calls.Add(1)
	if r.g.World == 1 {
		return ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	if r.rlen != len(buf) {
		r.rplan = reducePlan(len(buf), r.g.World, r.g.Rank, r.g.BucketBytes/4, r.g.ChunkBytes/4)
		r.rlen = len(buf)
	}
	o := r.newOp(r.rplan, floatBytes(buf))
	o.floats = buf
	return r.run(ctx, o)
}

// Broadcast sends root's buf to every rank, relayed along the ring in pipelined
// chunks; on the other ranks buf must have the same length and is overwritten.
// Every chunk carries a CRC-32C and the root's SHA-256 of the whole buffer
// follows the last chunk; a mismatch is an error.
func (r *Ring) Broadcast(ctx context.Context, root int, buf []byte) error {
	if err := r.brokenErr(); err != nil {
		return err
	}
	if root < 0 || root >= r.g.World {
		return fmt.Errorf("collective: broadcast: root %d is outside world %d", root, r.g.World)
	}
	r.stats.calls.Add(1)
	if r.g.World == 1 {
		return ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	if key := [2]int{len(buf), root}; r.bplan == nil || r.bkey != key {
		r.bplan = broadcastPlan(len(buf), r.g.World, r.g.Rank, root, r.g.ChunkBytes)
		r.bkey = key
	}
	o := r.newOp(r.bplan, buf)
	if r.g.Rank == root {
		o.digestOut = sha256.Sum256(buf)
	} else {
		o.sha = sha256.New()
	}
	return r.run(ctx, o)
}

// op is one operation in flight: a writer goroutine sends on next while a
// reader goroutine receives on prev and processes what it receives (adds,
// checks); the kernel's socket buffer takes in the next chunk meanwhile.
type op struct {
	r      *Ring
	p      *plan
	step   int64
	seq    uint64
	data   []byte
	floats []float32

	once    sync.Once
	err     error
	abort   chan struct{}
	done    atomic.Int64  // received frames processed
	sent    atomic.Int64  // frames written
	kick    chan struct{} // the writer's wake-up when done moves
	kickR   chan struct{} // the reader's wake-up when sent moves
	wg      sync.WaitGroup
	compute time.Duration // the reader's time adding and checking

	hdrW [headerSize]byte
	vec  [2][]byte
	bufs net.Buffers
	hdrR [headerSize]byte

	sha                 hash.Hash
	digestIn, digestOut [sha256.Size]byte
}

func (r *Ring) newOp(p *plan, data []byte) *op {
	return &op{
		r:     r,
		p:     p,
		step:  r.step.Load(),
		seq:   r.seq,
		data:  data,
		abort: make(chan struct{}),
		kick:  make(chan struct{}, 1),
		kickR: make(chan struct{}, 1),
	}
}

func (r *Ring) run(ctx context.Context, o *op) error {
	start := time.Now()
	after := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(after)
		o.fail(fmt.Errorf("collective: generation %d step %d: %w", r.g.Generation, o.step, ctx.Err()))
	})
	o.wg.Add(2)
	go o.writer()
	go o.reader()
	o.wg.Wait()
	if !stop() {
		<-after
	}
	busy := time.Since(start)
	r.stats.wait.Add(int64(busy - o.compute))
	r.stats.busy.Add(int64(busy))
	if o.err != nil {
		r.setBroken(o.err)
		r.log.Warn("collective: operation failed", "generation", r.g.Generation, "step", o.step, "rank", r.g.Rank, "err", o.err)
		return o.err
	}
	return nil
}

// fail records the operation's first error and closes the ring's connections,
// which unblocks this rank's goroutines and fails its neighbours at once.
func (o *op) fail(err error) {
	o.once.Do(func() {
		o.err = err
		close(o.abort)
		o.r.next.Close()
		o.r.prev.Close()
	})
}

func (o *op) peerErr(rank int, err error) error {
	return &PeerError{Generation: o.r.g.Generation, Step: o.step, Rank: rank, Host: o.r.g.Hosts[rank], Err: err}
}

func (o *op) writer() {
	defer o.wg.Done()
	r := o.r
	c, timeout := r.next, time.Duration(r.timeout.Load())
	h := header{generation: uint64(r.g.Generation), step: o.step, seq: o.seq, total: uint64(len(o.data))}
	for i := range o.p.sends {
		it := &o.p.sends[i]
		for o.done.Load() <= int64(it.dep) {
			select {
			case <-o.kick:
			case <-o.abort:
				return
			}
		}
		payload := o.digestOut[:]
		if it.kind != kindDigest {
			payload = o.data[it.off : it.off+it.n]
		}
		h.kind, h.index, h.length, h.crc = it.kind, uint32(i), uint32(len(payload)), 0
		if it.kind != kindReduce {
			h.crc = chunkCRC(payload)
		}
		h.encode(&o.hdrW)
		o.vec[0], o.vec[1] = o.hdrW[:], payload
		o.bufs = o.vec[:]
		c.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := o.bufs.WriteTo(c); err != nil {
			o.fail(o.peerErr(r.g.next(), describeIO(err, false, timeout)))
			return
		}
		r.stats.sent.Add(int64(headerSize + len(payload)))
		o.sent.Store(int64(i + 1))
		wake(o.kickR)
	}
}

// wake nudges a goroutine waiting on ch, without blocking.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (o *op) reader() {
	defer o.wg.Done()
	r := o.r
	c, timeout := r.prev, time.Duration(r.timeout.Load())
	want := header{generation: uint64(r.g.Generation), step: o.step, seq: o.seq, total: uint64(len(o.data))}
	readFull := func(b []byte) bool {
		c.SetReadDeadline(time.Now().Add(timeout))
		if _, err := io.ReadFull(c, b); err != nil {
			o.fail(o.peerErr(r.g.prev(), describeIO(err, true, timeout)))
			return false
		}
		return true
	}
	for j := range o.p.recvs {
		it := &o.p.recvs[j]
		if !readFull(o.hdrR[:]) {
			return
		}
		var h header
		err := h.decode(&o.hdrR)
		if err == nil {
			want.kind, want.index, want.length = it.kind, uint32(j), uint32(it.n)
			err = h.check(&want)
		} else {
			err = fmt.Errorf("sent something that is %w", err)
		}
		if err != nil {
			o.fail(o.peerErr(r.g.prev(), err))
			return
		}
		var dst []byte
		switch {
		case it.add:
			dst = floatBytes(r.scratch)[:it.n]
		case it.kind == kindDigest:
			dst = o.digestIn[:]
		default:
			// Frames before j are processed (this goroutine did it); wait
			// for the region's last send too (see recvItem).
			for o.sent.Load() <= int64(it.afterSend) {
				select {
				case <-o.kickR:
				case <-o.abort:
					return
				}
			}
			dst = o.data[it.off : it.off+it.n]
		}
		if !readFull(dst) {
			return
		}
		r.stats.recv.Add(int64(headerSize + it.n))
		t := time.Now()
		switch {
		case it.add:
			addTo(o.floats[it.off/4:(it.off+it.n)/4], r.scratch[:it.n/4])
		case it.kind == kindBroadcast:
			if err := checkChunk(uint32(j), h.crc, dst); err != nil {
				o.fail(o.peerErr(r.g.prev(), err))
				return
			}
			o.sha.Write(dst)
		case it.kind == kindDigest:
			err := checkChunk(uint32(j), h.crc, dst)
			if err == nil {
				err = checkDigest(o.sha.Sum(nil), dst)
			}
			if err != nil {
				o.fail(o.peerErr(r.g.prev(), err))
				return
			}
			o.digestOut = o.digestIn
		}
		o.compute += time.Since(t)
		o.done.Store(int64(j + 1))
		wake(o.kick)
	}
}
