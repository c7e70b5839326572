package collective

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Limits on connections that have not finished the ring handshake.
const (
	helloTimeout  = 10 * time.Second // to send the hello after connecting
	holdTime      = 5 * time.Second  // a connection for a generation no Join waits for yet is held this long
	maxParked     = 16               // connections held at once
	maxHandshakes = 64               // unauthenticated connections at once; more are closed on arrival
)

// Handshake messages (little-endian).
//
// The dialer (rank r) sends a hello to rank r+1:
//
//	magic u32, version u16, reserved u16, generation u64, from u32, to u32,
//	world u32, reserved u32, nonce [32]byte (crypto/rand)
//
// The acceptor answers with a status byte. statusOK is followed by its own nonce
// and HMAC-SHA256(secret, acceptorLabel || hello || nonceA); any other status by
// a u16 length and a reason. The dialer checks the MAC, sends
// HMAC-SHA256(secret, dialerLabel || hello || nonceA), and the acceptor checks it
// and sends a final status byte (statusOK: the connection belongs to the ring).
const (
	helloSize    = 64
	helloMagic   = 0x48524453 // "SDRH"
	helloVersion = 1
	nonceSize    = 32

	acceptorLabel = "samdiffsr collective v1 acceptor"
	dialerLabel   = "samdiffsr collective v1 dialer"
)

// Handshake statuses.
const (
	statusOK       = 0
	statusStale    = 1 // the generation is older than one this endpoint has joined
	statusMismatch = 2 // the hello's world or ranks do not match the group
	statusAuth     = 3 // the dialer failed to prove the secret
	statusGone     = 4 // no Join for the generation came in time, or the endpoint closed
)

type hello struct {
	generation      uint64
	from, to, world uint32
	nonce           [nonceSize]byte
	raw             [helloSize]byte
}

func (h *hello) encode() {
	b := &h.raw
	binary.LittleEndian.PutUint32(b[0:], helloMagic)
	binary.LittleEndian.PutUint16(b[4:], helloVersion)
	binary.LittleEndian.PutUint64(b[8:], h.generation)
	binary.LittleEndian.PutUint32(b[16:], h.from)
	binary.LittleEndian.PutUint32(b[20:], h.to)
	binary.LittleEndian.PutUint32(b[24:], h.world)
	copy(b[32:], h.nonce[:])
}

func (h *hello) decode() error {
	b := &h.raw
	if binary.LittleEndian.Uint32(b[0:]) != helloMagic {
		return errors.New("not a collective handshake")
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != helloVersion {
		return fmt.Errorf("handshake version %d, this build speaks %d", v, helloVersion)
	}
	h.generation = binary.LittleEndian.Uint64(b[8:])
	h.from = binary.LittleEndian.Uint32(b[16:])
	h.to = binary.LittleEndian.Uint32(b[20:])
	h.world = binary.LittleEndian.Uint32(b[24:])
	copy(h.nonce[:], b[32:])
	return nil
}

// proof is the HMAC one side sends to show it knows the secret.
func proof(secret []byte, label string, h *hello, nonceA []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	m.Write(h.raw[:])
	m.Write(nonceA)
	return m.Sum(nil)
}

// refusedError is a handshake the acceptor refused, with its reason.
type refusedError struct {
	status byte
	reason string
}

func (e *refusedError) Error() string { return "refused: " + e.reason }

// fatal reports whether retrying cannot help: the peer runs a newer generation
// or a different world.
func (e *refusedError) fatal() bool { return e.status == statusStale || e.status == statusMismatch }

// Endpoint owns one rank process's long-lived listener. It lives across
// generations: each generation's ring is formed by [Endpoint.Join].
type Endpoint struct {
	t    Transport
	ln   net.Listener
	addr string
	log  *slog.Logger

	mu      sync.Mutex
	latest  int             // highest generation Join was called with; -1 before any
	waiters map[int]*waiter // by generation
	parked  int
	changed chan struct{} // closed and replaced whenever waiters or latest change
	pending map[net.Conn]bool
	closed  bool
	done    chan struct{}
	wg      sync.WaitGroup
}

// waiter is a Join waiting for its previous rank's connection.
type waiter struct {
	g    Group
	ch   chan net.Conn // authenticated connections, handed over unbuffered
	done chan struct{} // closed when the Join no longer waits
}

// Listen opens addr on t and starts accepting ring connections. A nil log
// discards logs.
func Listen(t Transport, addr string, log *slog.Logger) (*Endpoint, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := t.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("collective: endpoint: %w", err)
	}
	e := &Endpoint{
		t:       t,
		ln:      ln,
		addr:    ln.Addr().String(),
		latest:  -1,
		waiters: make(map[int]*waiter),
		changed: make(chan struct{}),
		pending: make(map[net.Conn]bool),
		done:    make(chan struct{}),
	}
	e.log = log.With("endpoint", e.addr)
	e.wg.Add(1)
	go e.acceptLoop()
	return e, nil
}

// Addr is the address the endpoint listens on, with the port resolved.
func (e *Endpoint) Addr() string { return e.addr }

// Close stops listening and drops connections that are still handshaking. Rings
// already formed keep their connections; close them with [Ring.Close].
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.done)
	for c := range e.pending {
		c.Close()
	}
	e.mu.Unlock()
	err := e.ln.Close()
	e.wg.Wait()
	if err != nil {
		return fmt.Errorf("collective: endpoint %s: %w", e.addr, err)
	}
	return nil
}

func (e *Endpoint) acceptLoop() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			select {
			case <-e.done:
				return
			default:
			}
			e.log.Warn("collective: accept failed", "err", err)
			select {
			case <-e.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		e.mu.Lock()
		if e.closed || len(e.pending) >= maxHandshakes {
			e.mu.Unlock()
			e.log.Warn("collective: too many connections handshaking; closed one", "from", c.RemoteAddr().String())
			c.Close()
			continue
		}
		e.pending[c] = true
		e.wg.Add(1)
		e.mu.Unlock()
		go e.serve(c)
	}
}

// serve runs the acceptor's side of the handshake and hands an authenticated
// connection to the Join of its generation.
func (e *Endpoint) serve(c net.Conn) {
	defer e.wg.Done()
	handed := false
	defer func() {
		e.mu.Lock()
		delete(e.pending, c)
		e.mu.Unlock()
		if !handed {
			c.Close()
		}
	}()
	from := c.RemoteAddr().String()
	c.SetDeadline(time.Now().Add(helloTimeout))
	var h hello
	if _, err := io.ReadFull(c, h.raw[:]); err != nil {
		e.log.Info("collective: connection closed before its hello", "from", from, "err", err)
		return
	}
	if err := h.decode(); err != nil {
		e.log.Warn("collective: refused a connection", "from", from, "err", err)
		return
	}
	gen := int(h.generation)
	w, status, err := e.waiterFor(gen)
	if err != nil {
		e.log.Warn("collective: refused a connection", "from", from, "generation", gen, "err", err)
		refuse(c, status, err.Error())
		return
	}
	g := &w.g
	if int(h.world) != g.World || int(h.to) != g.Rank || int(h.from) != g.prev() {
		err := fmt.Errorf("generation %d: hello from rank %d to rank %d of world %d, but this is rank %d of world %d expecting rank %d",
			gen, h.from, h.to, h.world, g.Rank, g.World, g.prev())
		e.log.Warn("collective: refused a connection", "from", from, "err", err)
		refuse(c, statusMismatch, err.Error())
		return
	}
	c.SetDeadline(time.Now().Add(g.Timeout))
	var reply [1 + nonceSize + sha256.Size]byte
	reply[0] = statusOK
	nonceA := reply[1 : 1+nonceSize]
	if _, err := rand.Read(nonceA); err != nil {
		e.log.Error("collective: no randomness for a handshake nonce", "err", err)
		return
	}
	copy(reply[1+nonceSize:], proof(g.Secret, acceptorLabel, &h, nonceA))
	if _, err := c.Write(reply[:]); err != nil {
		e.log.Info("collective: handshake failed", "from", from, "err", err)
		return
	}
	var macD [sha256.Size]byte
	if _, err := io.ReadFull(c, macD[:]); err != nil {
		e.log.Info("collective: handshake failed", "from", from, "err", err)
		return
	}
	if !hmac.Equal(macD[:], proof(g.Secret, dialerLabel, &h, nonceA)) {
		err := fmt.Errorf("generation %d: the peer claiming to be %s does not know the generation's secret", gen, g.peer(int(h.from)))
		e.log.Warn("collective: refused a connection", "from", from, "err", err)
		refuse(c, statusAuth, err.Error())
		return
	}
	c.SetDeadline(time.Time{})
	select {
	case w.ch <- c:
		handed = true
	case <-w.done:
	case <-e.done:
	}
}

// waiterFor finds the Join waiting for generation gen, holding the connection
// up to holdTime for one to come. It refuses generations older than the newest
// Join seen.
func (e *Endpoint) waiterFor(gen int) (*waiter, byte, error) {
	var timer *time.Timer
	parked := false
	e.mu.Lock()
	defer func() {
		if parked {
			e.parked--
		}
		e.mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		switch {
		case e.closed:
			return nil, statusGone, errors.New("endpoint closed")
		case gen < e.latest:
			return nil, statusStale, fmt.Errorf("generation %d is older than generation %d, which this endpoint has joined", gen, e.latest)
		}
		if w := e.waiters[gen]; w != nil {
			return w, statusOK, nil
		}
		if !parked {
			if e.parked >= maxParked {
				return nil, statusGone, fmt.Errorf("no Join for generation %d and %d connections already held", gen, maxParked)
			}
			e.parked++
			parked = true
			timer = time.NewTimer(holdTime)
		}
		changed := e.changed
		e.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			e.mu.Lock()
			if w := e.waiters[gen]; w != nil && gen >= e.latest {
				return w, statusOK, nil
			}
			return nil, statusGone, fmt.Errorf("no Join for generation %d within %s", gen, holdTime)
		case <-e.done:
		}
		e.mu.Lock()
	}
}

// refuse tells the dialer why, best effort, before the caller closes c.
func refuse(c net.Conn, status byte, reason string) {
	if len(reason) > 1000 {
		reason = reason[:1000]
	}
	b := make([]byte, 3+len(reason))
	b[0] = status
	binary.LittleEndian.PutUint16(b[1:], uint16(len(reason)))
	copy(b[3:], reason)
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(b)
}

func (e *Endpoint) register(g Group) (*waiter, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return nil, errors.New("endpoint closed")
	case g.Generation < e.latest:
		return nil, fmt.Errorf("generation %d is older than generation %d, which this endpoint has joined", g.Generation, e.latest)
	case e.waiters[g.Generation] != nil:
		return nil, fmt.Errorf("another Join for generation %d is in progress on this endpoint", g.Generation)
	}
	e.latest = g.Generation
	w := &waiter{g: g, ch: make(chan net.Conn), done: make(chan struct{})}
	e.waiters[g.Generation] = w
	close(e.changed)
	e.changed = make(chan struct{})
	return w, nil
}

func (e *Endpoint) unregister(w *waiter) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.waiters[w.g.Generation] == w {
		delete(e.waiters, w.g.Generation)
	}
	close(w.done)
}

// Join forms this rank's ring for one generation: it dials rank+1's address,
// accepts rank-1's connection, and authenticates both with the group's secret.
// A connection from a stranger, or from a peer with the wrong secret, is refused
// and Join keeps waiting for the right peer, up to g.JoinTimeout or until ctx is
// done. Connections that arrive for a generation no Join is waiting for are held
// for a few seconds (a bounded number of them) in case the Join comes, then
// dropped; connections for a generation older than any Join seen are refused,
// and so is a Join for such a generation.
func (e *Endpoint) Join(ctx context.Context, g Group) (*Ring, error) {
	if err := g.validate(); err != nil {
		return nil, fmt.Errorf("collective: join: %w", err)
	}
	g = g.withDefaults()
	fail := func(err error) error {
		return fmt.Errorf("collective: generation %d rank %d: join: %w", g.Generation, g.Rank, err)
	}
	if !littleEndian() {
		return nil, fail(errors.New("big-endian hosts are not supported (the wire format is little-endian)"))
	}
	w, err := e.register(g)
	if err != nil {
		return nil, fail(err)
	}
	defer e.unregister(w)
	if g.World == 1 {
		return newRing(g, nil, nil, e.log), nil
	}
	jctx, cancel := context.WithTimeout(ctx, g.JoinTimeout)
	defer cancel()

	type dialed struct {
		c   net.Conn
		err error
	}
	dch := make(chan dialed, 1)
	go func() {
		c, err := e.dialNext(jctx, &g)
		dch <- dialed{c, err}
	}()
	var next, prev net.Conn
	accept := w.ch
	for next == nil || prev == nil {
		select {
		case d := <-dch:
			dch = nil
			if d.err != nil {
				err = d.err
			}
			next = d.c
		case c := <-accept:
			c.SetWriteDeadline(time.Now().Add(g.Timeout))
			if _, werr := c.Write([]byte{statusOK}); werr != nil {
				e.log.Info("collective: lost an authenticated connection before confirming it", "from", c.RemoteAddr().String(), "err", werr)
				c.Close()
				continue
			}
			c.SetWriteDeadline(time.Time{})
			prev, accept = c, nil
		case <-jctx.Done():
			if ctx.Err() != nil {
				err = ctx.Err()
			} else {
				err = fmt.Errorf("no authenticated connection from %s within %s: %w", g.peer(g.prev()), g.JoinTimeout, jctx.Err())
			}
		case <-e.done:
			err = errors.New("endpoint closed")
		}
		if err != nil {
			break
		}
	}
	if err != nil {
		cancel()
		if dch != nil {
			if d := <-dch; d.c != nil {
				d.c.Close()
			}
		}
		if next != nil {
			next.Close()
		}
		if prev != nil {
			prev.Close()
		}
		return nil, fail(err)
	}
	e.log.Debug("collective: joined", "generation", g.Generation, "rank", g.Rank, "world", g.World)
	return newRing(g, next, prev, e.log), nil
}

// dialNext connects to the next rank and runs the dialer's side of the
// handshake, retrying until ctx is done or the peer refuses for good.
func (e *Endpoint) dialNext(ctx context.Context, g *Group) (net.Conn, error) {
	backoff := 10 * time.Millisecond
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for {
		c, err := e.dialOnce(ctx, g)
		if err == nil {
			return c, nil
		}
		var re *refusedError
		if errors.As(err, &re) && re.fatal() {
			return nil, fmt.Errorf("%s: %w", g.peer(g.next()), err)
		}
		e.log.Debug("collective: dial failed; retrying", "to", g.Peers[g.next()], "err", err)
		timer.Reset(backoff)
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, fmt.Errorf("could not join %s within %s: %w (last error: %v)", g.peer(g.next()), g.JoinTimeout, ctx.Err(), err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

func (e *Endpoint) dialOnce(ctx context.Context, g *Group) (net.Conn, error) {
	addr := g.Peers[g.next()]
	dctx, cancel := context.WithTimeout(withLocalAddr(ctx, e.addr), g.Timeout)
	defer cancel()
	c, err := e.t.Dial(dctx, addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(dctx, func() { c.Close() })
	ok := false
	defer func() {
		stop()
		if !ok {
			c.Close()
		}
	}()
	c.SetDeadline(time.Now().Add(g.Timeout))
	h := hello{generation: uint64(g.Generation), from: uint32(g.Rank), to: uint32(g.next()), world: uint32(g.World)}
	if _, err := rand.Read(h.nonce[:]); err != nil {
		return nil, fmt.Errorf("no randomness for a handshake nonce: %w", err)
	}
	h.encode()
	if _, err := c.Write(h.raw[:]); err != nil {
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	if err := readStatus(c); err != nil {
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	var nm [nonceSize + sha256.Size]byte
	if _, err := io.ReadFull(c, nm[:]); err != nil {
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	nonceA := nm[:nonceSize]
	if !hmac.Equal(nm[nonceSize:], proof(g.Secret, acceptorLabel, &h, nonceA)) {
		e.log.Warn("collective: the listener at the next rank's address does not know the generation's secret", "to", addr, "generation", g.Generation)
		return nil, fmt.Errorf("handshake with %s: it does not know generation %d's secret", addr, g.Generation)
	}
	if _, err := c.Write(proof(g.Secret, dialerLabel, &h, nonceA)); err != nil {
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	if err := readStatus(c); err != nil {
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	if !stop() {
		return nil, ctx.Err()
	}
	c.SetDeadline(time.Time{})
	ok = true
	return c, nil
}

// readStatus reads a status byte and, for a refusal, its reason.
func readStatus(c net.Conn) error {
	var s [3]byte
	if _, err := io.ReadFull(c, s[:1]); err != nil {
		return err
	}
	if s[0] == statusOK {
		return nil
	}
	reason := "no reason given"
	if _, err := io.ReadFull(c, s[1:3]); err == nil {
		b := make([]byte, binary.LittleEndian.Uint16(s[1:3]))
		if _, err := io.ReadFull(c, b); err == nil {
			reason = string(b)
		}
	}
	return &refusedError{status: s[0], reason: reason}
}
