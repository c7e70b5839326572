package collective

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Mem is the in-memory twin of [TCP]: a registry of in-process listeners whose
// addresses are arbitrary strings such as "mem-0". Tests use it to form rings
// without sockets and to break them on purpose: [Mem.Cut] fails a link at once,
// [Mem.Stall] silences an address as a stopped (SIGSTOP) process would.
//
// A connection is attributed to the listener addresses at both of its ends: the
// listener it was accepted on, and the [Endpoint] that dialed it (Endpoint passes
// its own address along with the dial). Dials from outside any Endpoint have the
// empty source address.
//
// The zero value is not usable; call [NewMem]. A Mem is safe for concurrent use.
type Mem struct {
	mu        sync.Mutex
	listeners map[string]*memListener
	cut       map[[2]string]bool
	stalled   map[string]bool
	pipes     map[*memPipe]bool
	auto      int
}

// memPipeCap bounds the bytes queued in one direction of a connection, as a
// kernel socket buffer does: a writer blocks while the reader is behind.
const memPipeCap = 1 << 20

// errMemCut is what reads and writes on a cut link return.
var errMemCut = errors.New("collective: mem link cut")

// NewMem returns an empty in-memory transport.
func NewMem() *Mem {
	return &Mem{
		listeners: make(map[string]*memListener),
		cut:       make(map[[2]string]bool),
		stalled:   make(map[string]bool),
		pipes:     make(map[*memPipe]bool),
	}
}

// Listen registers a listener at addr; the empty address picks a fresh "mem-N".
func (m *Mem) Listen(addr string) (net.Listener, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if addr == "" {
		for {
			addr = fmt.Sprintf("mem-%d", m.auto)
			m.auto++
			if m.listeners[addr] == nil {
				break
			}
		}
	}
	if m.listeners[addr] != nil {
		return nil, fmt.Errorf("collective: mem listen on %s: address in use", addr)
	}
	l := &memListener{m: m, addr: memAddr(addr), ch: make(chan net.Conn, 16), done: make(chan struct{})}
	m.listeners[addr] = l
	return l, nil
}

// Dial connects to the listener at addr.
func (m *Mem) Dial(ctx context.Context, addr string) (net.Conn, error) {
	src := localAddr(ctx)
	m.mu.Lock()
	l := m.listeners[addr]
	if l == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("collective: mem dial %s: connection refused", addr)
	}
	if m.cut[pairKey(src, addr)] {
		m.mu.Unlock()
		return nil, fmt.Errorf("collective: mem dial %s from %s: %w", addr, src, errMemCut)
	}
	up, down := m.newPipe(src, addr), m.newPipe(addr, src)
	m.mu.Unlock()
	client := &memConn{m: m, rx: down, tx: up, local: memAddr(src), remote: memAddr(addr)}
	server := &memConn{m: m, rx: up, tx: down, local: memAddr(addr), remote: memAddr(src)}
	select {
	case l.ch <- server:
		return client, nil
	case <-l.done:
		err := fmt.Errorf("collective: mem dial %s: connection refused", addr)
		client.Close()
		server.Close()
		return nil, err
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, fmt.Errorf("collective: mem dial %s: %w", addr, ctx.Err())
	}
}

// newPipe makes and registers one direction of a connection; m.mu is held.
func (m *Mem) newPipe(src, dst string) *memPipe {
	p := &memPipe{src: src, dst: dst, sig: make(chan struct{}), stalled: m.stalled[src] || m.stalled[dst]}
	m.pipes[p] = true
	return p
}

// Cut breaks every connection between listener addresses a and b, in both
// directions (reads and writes on them fail at once), and refuses new dials
// between them until [Mem.Heal].
func (m *Mem) Cut(a, b string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cut[pairKey(a, b)] = true
	for p := range m.pipes {
		if pairKey(p.src, p.dst) == pairKey(a, b) {
			p.mu.Lock()
			p.cut = true
			p.signal()
			p.mu.Unlock()
		}
	}
}

// Heal lets new connections between a and b be dialed again; connections that
// Cut broke stay broken.
func (m *Mem) Heal(a, b string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.cut, pairKey(a, b))
}

// Stall stops every connection to or from addr delivering anything, data or
// close, as if the process behind addr were stopped: no error, just silence.
// Writers still fill the queue up to its bound, then block. Deadlines still fire.
func (m *Mem) Stall(addr string) { m.setStalled(addr, true) }

// Resume undoes [Mem.Stall]: queued data and closes are delivered again.
func (m *Mem) Resume(addr string) { m.setStalled(addr, false) }

func (m *Mem) setStalled(addr string, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if on {
		m.stalled[addr] = true
	} else {
		delete(m.stalled, addr)
	}
	for p := range m.pipes {
		if p.src == addr || p.dst == addr {
			p.mu.Lock()
			p.stalled = m.stalled[p.src] || m.stalled[p.dst]
			p.signal()
			p.mu.Unlock()
		}
	}
}

// forget drops a connection's pipes from the registry once both ends are closed.
func (m *Mem) forget(ps ...*memPipe) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		p.mu.Lock()
		if p.rclosed && p.wclosed {
			delete(m.pipes, p)
		}
		p.mu.Unlock()
	}
}

func pairKey(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// localAddrKey carries the dialing Endpoint's address to Mem.Dial.
type localAddrKey struct{}

func withLocalAddr(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, localAddrKey{}, addr)
}

func localAddr(ctx context.Context) string {
	s, _ := ctx.Value(localAddrKey{}).(string)
	return s
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

type memListener struct {
	m    *Mem
	addr memAddr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("collective: mem accept on %s: %w", l.addr, net.ErrClosed)
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() {
		l.m.mu.Lock()
		if l.m.listeners[string(l.addr)] == l {
			delete(l.m.listeners, string(l.addr))
		}
		l.m.mu.Unlock()
		close(l.done)
		for {
			select {
			case c := <-l.ch:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (l *memListener) Addr() net.Addr { return l.addr }

// memPipe is one direction of a connection. All its state is guarded by mu;
// every change is announced by closing sig (and replacing it), so any number of
// waiters wake and re-check.
type memPipe struct {
	src, dst string

	mu      sync.Mutex
	buf     []byte // queued bytes are buf[off:]
	off     int
	rclosed bool // the reading end was closed
	wclosed bool // the writing end was closed
	cut     bool
	stalled bool
	rdl     time.Time // reader's deadline
	wdl     time.Time // writer's deadline
	sig     chan struct{}
}

// signal wakes every waiter; p.mu is held.
func (p *memPipe) signal() {
	close(p.sig)
	p.sig = make(chan struct{})
}

// wait blocks until sig is closed or the deadline passes.
func wait(sig chan struct{}, dl time.Time) error {
	if dl.IsZero() {
		<-sig
		return nil
	}
	d := time.Until(dl)
	if d <= 0 {
		return os.ErrDeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-sig:
		return nil
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

type memConn struct {
	m             *Mem
	rx, tx        *memPipe
	local, remote memAddr
}

func (c *memConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p := c.rx
	for {
		p.mu.Lock()
		switch {
		case p.rclosed:
			p.mu.Unlock()
			return 0, net.ErrClosed
		case p.cut:
			p.mu.Unlock()
			return 0, errMemCut
		case p.stalled:
		case len(p.buf) > p.off:
			n := copy(b, p.buf[p.off:])
			p.off += n
			if p.off == len(p.buf) {
				p.buf, p.off = p.buf[:0], 0
			}
			p.signal()
			p.mu.Unlock()
			return n, nil
		case p.wclosed:
			p.mu.Unlock()
			return 0, io.EOF
		}
		sig, dl := p.sig, p.rdl
		p.mu.Unlock()
		if err := wait(sig, dl); err != nil {
			return 0, err
		}
	}
}

func (c *memConn) Write(b []byte) (int, error) {
	p := c.tx
	n := 0
	for n < len(b) {
		p.mu.Lock()
		switch {
		case p.wclosed:
			p.mu.Unlock()
			return n, net.ErrClosed
		case p.cut:
			p.mu.Unlock()
			return n, errMemCut
		case p.rclosed && !p.stalled:
			p.mu.Unlock()
			return n, io.ErrClosedPipe
		}
		if space := memPipeCap - (len(p.buf) - p.off); space > 0 && !p.rclosed {
			k := min(space, len(b)-n)
			if p.off > 0 && cap(p.buf)-len(p.buf) < k {
				p.buf = p.buf[:copy(p.buf, p.buf[p.off:])]
				p.off = 0
			}
			p.buf = append(p.buf, b[n:n+k]...)
			n += k
			p.signal()
			p.mu.Unlock()
			continue
		}
		sig, dl := p.sig, p.wdl
		p.mu.Unlock()
		if err := wait(sig, dl); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *memConn) Close() error {
	c.tx.mu.Lock()
	c.tx.wclosed = true
	c.tx.signal()
	c.tx.mu.Unlock()
	c.rx.mu.Lock()
	c.rx.rclosed = true
	c.rx.buf, c.rx.off = nil, 0
	c.rx.signal()
	c.rx.mu.Unlock()
	c.m.forget(c.rx, c.tx)
	return nil
}

func (c *memConn) LocalAddr() net.Addr  { return c.local }
func (c *memConn) RemoteAddr() net.Addr { return c.remote }

func (c *memConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.rx.mu.Lock()
	c.rx.rdl = t
	c.rx.signal()
	c.rx.mu.Unlock()
	return nil
}

func (c *memConn) SetWriteDeadline(t time.Time) error {
	c.tx.mu.Lock()
	c.tx.wdl = t
	c.tx.signal()
	c.tx.mu.Unlock()
	return nil
}
