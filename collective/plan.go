package collective

// A plan lists, for one operation on one rank, the frames it sends to the next
// rank and the frames it receives from the previous one, in wire order. Rank r's
// receive list is, item for item, rank r-1's send list.
type plan struct {
	sends []sendItem
	recvs []recvItem
}

// sendItem is one frame to send: bytes [off, off+n) of the operation's buffer
// (or the digest, for kindDigest), once the first dep+1 received frames have
// been processed (dep -1: at once).
type sendItem struct {
	kind   uint8
	off, n int
	dep    int
}

// recvItem is one frame to receive into bytes [off, off+n) of the buffer; add
// frames are summed into it, others overwrite it. An overwriting frame's payload
// is read into the buffer only once received frame after has been processed and
// sent frame afterSend written (-1: no condition): the region's last add and last
// send. Both have always happened by the time the frame arrives, since the frame's
// contents depend on them; the wait makes that order visible to the Go memory
// model (and the race detector), which cannot see through a socket.
type recvItem struct {
	kind             uint8
	off, n           int
	add              bool
	after, afterSend int
}

func mod(a, m int) int { return ((a % m) + m) % m }

// reducePlan lays out the ring all-reduce of n float32s. Each bucket of
// bucket floats is split into world segments; in reduce-scatter step k rank r
// sends segment r-k and adds the received segment r-k-1 into its own, so after
// world-1 steps it holds the full sum of segment r+1; in all-gather step k it
// sends segment r+1-k and overwrites its segment r-k with the received one.
// Segments are sent in chunks of chunk floats, and a chunk moves on as soon as it
// has been added (pipelining). The sum of segment s is accumulated in the order
// s, s+1, ..., s-1 (mod world), whatever the timing: bit-identical run after run.
func reducePlan(n, world, rank, bucket, chunk int) *plan {
	p := &plan{}
	if world < 2 {
		return p
	}
	var rs, ag [][]int // indices into recvs, by step then chunk
	var rsSend [][]int // indices into sends, by step then chunk
	for b0 := 0; b0 < n; b0 += bucket {
		length := min(bucket, n-b0)
		seg := func(s int) (int, int) {
			lo, hi := b0+s*length/world, b0+(s+1)*length/world
			return lo, hi - lo
		}
		chunks := func(s int, f func(off, n int)) {
			lo, l := seg(s)
			for c := 0; c < l; c += chunk {
				f(4*(lo+c), 4*min(chunk, l-c))
			}
		}
		rs, ag, rsSend = rs[:0], ag[:0], rsSend[:0]
		for k := 0; k < world-1; k++ {
			var idx []int
			chunks(mod(rank-k-1, world), func(off, n int) {
				idx = append(idx, len(p.recvs))
				p.recvs = append(p.recvs, recvItem{kind: kindReduce, off: off, n: n, add: true, after: -1, afterSend: -1})
			})
			rs = append(rs, idx)
		}
		for k := 0; k < world-1; k++ {
			var idx []int
			c := 0
			chunks(mod(rank-k, world), func(off, n int) {
				idx = append(idx, len(p.recvs))
				after := -1
				if k > 0 {
					after = rs[k-1][c]
				}
				p.recvs = append(p.recvs, recvItem{kind: kindReduce, off: off, n: n, after: after})
				c++
			})
			ag = append(ag, idx)
		}
		for k := 0; k < world-1; k++ {
			var idx []int
			c := 0
			chunks(mod(rank-k, world), func(off, n int) {
				dep := -1
				if k > 0 {
					dep = rs[k-1][c]
				}
				idx = append(idx, len(p.sends))
				p.sends = append(p.sends, sendItem{kind: kindReduce, off: off, n: n, dep: dep})
				c++
			})
			rsSend = append(rsSend, idx)
		}
		// All-gather step k overwrites segment rank-k, which reduce-scatter step k sent.
		for k := 0; k < world-1; k++ {
			for c, j := range ag[k] {
				p.recvs[j].afterSend = rsSend[k][c]
			}
		}
		for k := 0; k < world-1; k++ {
			c := 0
			chunks(mod(rank+1-k, world), func(off, n int) {
				var dep int
				if k == 0 {
					dep = rs[world-2][c]
				} else {
					dep = ag[k-1][c]
				}
				p.sends = append(p.sends, sendItem{kind: kindReduce, off: off, n: n, dep: dep})
				c++
			})
		}
	}
	return p
}

// broadcastPlan lays out a broadcast of n bytes from root: chunks travel from
// the root along the ring, each relay forwarding a chunk once it has checked it,
// and the root's SHA-256 of the whole buffer follows the last chunk.
func broadcastPlan(n, world, rank, root, chunk int) *plan {
	p := &plan{}
	if world < 2 {
		return p
	}
	d := mod(rank-root, world) // distance from the root
	nchunks := 0
	for off := 0; off < n; off += chunk {
		l := min(chunk, n-off)
		if d > 0 {
			p.recvs = append(p.recvs, recvItem{kind: kindBroadcast, off: off, n: l, after: -1, afterSend: -1})
		}
		if d < world-1 {
			dep := -1
			if d > 0 {
				dep = nchunks
			}
			p.sends = append(p.sends, sendItem{kind: kindBroadcast, off: off, n: l, dep: dep})
		}
		nchunks++
	}
	if d > 0 {
		p.recvs = append(p.recvs, recvItem{kind: kindDigest, n: 32, after: -1, afterSend: -1})
	}
	if d < world-1 {
		dep := -1
		if d > 0 {
			dep = nchunks
		}
		p.sends = append(p.sends, sendItem{kind: kindDigest, n: 32, dep: dep})
	}
	return p
}
