package collective

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// benchFloats is the U-Net's gradient: 13,000,000 float32s, 52 MB.
const benchFloats = 13_000_000

func benchBuffers(world int) [][]float32 {
	bufs := make([][]float32, world)
	for r := range bufs {
		bufs[r] = make([]float32, benchFloats)
		for i := range bufs[r] {
			bufs[r][i] = float32(i%1000) * 1e-3
		}
	}
	return bufs
}

// BenchmarkAllReduceTCP sums a 52 MB buffer over a loopback ring of 2-4 ranks
// in this process. It reports the algorithm bandwidth (buffer bytes / time, also
// as MB/s through SetBytes), the bus bandwidth (algbw·2(W-1)/W, the rate each
// rank's link carries) and the bound: the per-link rate of W loopback
// connections running at once, measured just before, times W/(2(W-1)).
func BenchmarkAllReduceTCP(b *testing.B) {
	for _, world := range []int{2, 3, 4} {
		b.Run(fmt.Sprintf("ranks=%d", world), func(b *testing.B) {
			tr := TCP(nil, nil)
			eps := listenN(b, tr, tcpAddrs(world))
			rings := joinAll(b, eps, 1, nil)
			bufs := benchBuffers(world)
			size := float64(4 * benchFloats)
			perLink := int64(2 * (world - 1) * 4 * benchFloats / world)
			link := loopbackRate(b, tr, world, perLink, 3)
			bound := link * float64(world) / float64(2*(world-1))

			b.SetBytes(4 * benchFloats)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var wg sync.WaitGroup
				errs := make([]error, world)
				for r := range world {
					wg.Go(func() {
						rings[r].SetStep(int64(i))
						errs[r] = rings[r].AllReduce(context.Background(), bufs[r])
					})
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			alg := size * float64(b.N) / b.Elapsed().Seconds()
			st := rings[0].Stats()
			b.ReportMetric(alg/1e9, "alg_GB/s")
			b.ReportMetric(alg*float64(2*(world-1))/float64(world)/1e9, "bus_GB/s")
			b.ReportMetric(bound/1e9, "bound_GB/s")
			b.ReportMetric(100*alg/bound, "%bound")
			b.ReportMetric(100*st.Wait.Seconds()/st.Busy.Seconds(), "%wait")
		})
	}
}

// BenchmarkLoopbackTCP measures raw loopback TCP: conns connections at once,
// each carrying 52 MB per iteration in 4 MiB writes, with the ring's socket
// options. It reports the per-link and aggregate rates.
func BenchmarkLoopbackTCP(b *testing.B) {
	for _, conns := range []int{1, 2, 3, 4} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			pairs := loopbackPairs(b, TCP(nil, nil), conns)
			b.SetBytes(4 * benchFloats)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				transfer(b, pairs, 4*benchFloats)
			}
			b.StopTimer()
			per := float64(4*benchFloats) * float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(per/1e9, "link_GB/s")
			b.ReportMetric(per*float64(conns)/1e9, "total_GB/s")
		})
	}
}

// loopbackRate is the best per-link rate of n simultaneous loopback links each
// carrying bytes, over reps tries.
func loopbackRate(b *testing.B, tr Transport, n int, bytes int64, reps int) float64 {
	b.Helper()
	pairs := loopbackPairs(b, tr, n)
	best := 0.0
	for range reps {
		start := time.Now()
		transfer(b, pairs, bytes)
		best = max(best, float64(bytes)/time.Since(start).Seconds())
	}
	return best
}

func loopbackPairs(b *testing.B, tr Transport, n int) [][2]net.Conn {
	b.Helper()
	ln, err := tr.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	pairs := make([][2]net.Conn, n)
	for i := range pairs {
		c, err := tr.Dial(context.Background(), ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		pairs[i] = [2]net.Conn{c, s}
		b.Cleanup(func() { c.Close(); s.Close() })
	}
	return pairs
}

// transfer sends bytes on every pair at once, in 4 MiB writes.
func transfer(b *testing.B, pairs [][2]net.Conn, bytes int64) {
	const block = 4 << 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(pairs))
	for _, p := range pairs {
		wg.Go(func() {
			buf := make([]byte, block)
			for left := bytes; left > 0; left -= block {
				if _, err := p[0].Write(buf[:min(left, block)]); err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() {
			buf := make([]byte, block)
			for left := bytes; left > 0; left -= block {
				if _, err := io.ReadFull(p[1], buf[:min(left, block)]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// BenchmarkAllReduceNATS does the same sum through an embedded nats-server as
// a hub: each rank publishes its buffer in 1 MiB messages on its own subject,
// subscribes to the others' and adds what arrives.
func BenchmarkAllReduceNATS(b *testing.B) {
	for _, world := range []int{2, 3, 4} {
		b.Run(fmt.Sprintf("ranks=%d", world), func(b *testing.B) {
			ns, err := server.NewServer(&server.Options{
				Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
				MaxPending: 1 << 30, WriteDeadline: time.Minute,
			})
			if err != nil {
				b.Fatal(err)
			}
			go ns.Start()
			if !ns.ReadyForConnections(10 * time.Second) {
				b.Fatal("nats-server did not start")
			}
			b.Cleanup(ns.Shutdown)
			const msg = 1 << 20
			bufs := benchBuffers(world)
			ranks := make([]*natsRank, world)
			for r := range ranks {
				nc, err := nats.Connect(ns.ClientURL(), nats.NoEcho())
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(nc.Close)
				nr := &natsRank{nc: nc, rank: r, acc: bufs[r], arrived: make(chan struct{}, 1), scratch: make([]float32, msg/4)}
				nr.sub, err = nc.Subscribe("allreduce.*", nr.handle)
				if err != nil {
					b.Fatal(err)
				}
				nr.sub.SetPendingLimits(-1, -1)
				ranks[r] = nr
			}
			for _, nr := range ranks {
				nr.nc.Flush()
			}
			msgs := (4*benchFloats + msg - 1) / msg
			own := make([][]float32, world) // what each rank contributes; acc gets the sum
			for r := range own {
				own[r] = make([]float32, benchFloats)
			}
			b.SetBytes(4 * benchFloats)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var wg sync.WaitGroup
				for r, nr := range ranks {
					copy(own[r], nr.acc)
					nr.reset(msgs * (world - 1))
				}
				for r, nr := range ranks {
					wg.Go(func() {
						if err := nr.publish(own[r], msg); err != nil {
							b.Error(err)
						}
						nr.wait(b)
					})
				}
				wg.Wait()
			}
			b.StopTimer()
			alg := float64(4*benchFloats) * float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(alg/1e9, "alg_GB/s")
		})
	}
}

type natsRank struct {
	nc      *nats.Conn
	sub     *nats.Subscription
	rank    int
	acc     []float32
	scratch []float32

	mu      sync.Mutex
	offs    map[int]int // next float offset by sending rank
	want    int
	arrived chan struct{}
}

func (n *natsRank) reset(want int) {
	n.mu.Lock()
	n.offs = make(map[int]int)
	n.want = want
	n.mu.Unlock()
}

func (n *natsRank) publish(buf []float32, msg int) error {
	data := floatBytes(buf)
	subj := "allreduce." + strconv.Itoa(n.rank)
	for off := 0; off < len(data); off += msg {
		if err := n.nc.Publish(subj, data[off:min(off+msg, len(data))]); err != nil {
			return err
		}
	}
	return n.nc.Flush()
}

// handle adds a message into the accumulator; messages from one publisher
// arrive in order, so their offsets follow.
func (n *natsRank) handle(m *nats.Msg) {
	from, _ := strconv.Atoi(strings.TrimPrefix(m.Subject, "allreduce."))
	src := n.scratch[:len(m.Data)/4]
	if uintptr(unsafe.Pointer(unsafe.SliceData(m.Data)))%4 == 0 {
		src = unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(m.Data))), len(m.Data)/4)
	} else {
		copy(floatBytes(src), m.Data)
	}
	n.mu.Lock()
	off := n.offs[from]
	n.offs[from] = off + len(src)
	n.want--
	done := n.want == 0
	n.mu.Unlock()
	addTo(n.acc[off:off+len(src)], src)
	if done {
		n.arrived <- struct{}{}
	}
}

func (n *natsRank) wait(b *testing.B) {
	select {
	case <-n.arrived:
	case <-time.After(2 * time.Minute):
		b.Error("NATS all-reduce: messages missing after 2 minutes")
	}
}
