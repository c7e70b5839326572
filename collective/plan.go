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
// frames are summed into it, others overwrite it. Frames are processed in order,
// so an overwriting frame comes after the region's last add; its payload is read
// into the buffer only once sent frame afterSend (the region's last send; -1:
// none) has been written. That send has always happened by the time the frame
// arrives, since the frame's contents depend on it; the wait makes the order
// visible to the Go memory model (and the race detector), which cannot see
// through a socket.
type recvItem struct {
	kind      uint8
	off, n    int
	add       bool
	afterSend int
}

func mod(a, m int) int { return ((a % m) + m) % m }

// reducePlan lays out the ring all-reduce of n float32s. Each bucket of
// bucket floats is split into world segments; in reduce-scatter step k rank r
// sends segment r-k and adds the received segment r-k-1 into its own, so after
// world-1 steps it holds the full sum of segment r+1; in all-gather step j it
// sends segment r+1-j and overwrites its segment r-j with the received one.
// Segments are sent in chunks of chunk floats, and a chunk moves on as soon as it
// has been added (pipelining). The sum of segment s is accumulated in the order
// s, s+1, ..., s-1 (mod world), whatever the timing: bit-identical run after run.
//
// Buckets overlap in waves: wave t carries step t-b of every bucket b, so while
// one bucket waits for its previous step's chunks the link carries the next
// buckets' earlier steps, and the link never idles on a step boundary.
func reducePlan(n, world, rank, bucket, chunk int) *plan {
	p := &plan{}
	if world < 2 || n == 0 {
		return p
	}
	steps := 2 * (world - 1)
	nb := (n + bucket - 1) / bucket
	// chunks of segment s of bucket b, as byte offsets and lengths
	chunks := func(b, s int) [][2]int {
		b0 := b * bucket
		length := min(bucket, n-b0)
		lo, hi := b0+s*length/world, b0+(s+1)*length/world
		var cs [][2]int
		for c := lo; c < hi; c += chunk {
			cs = append(cs, [2]int{4 * c, 4 * min(chunk, hi-c)})
		}
		return cs
	}
	sendSeg := func(k int) int { // segment rank sends in step k
		if k < world-1 {
			return mod(rank-k, world)
		}
		return mod(rank+1-(k-world+1), world)
	}
	recvSeg := func(k int) int { // segment rank receives in step k
		if k < world-1 {
			return mod(rank-k-1, world)
		}
		return mod(rank-(k-world+1), world)
	}
	// recvIdx[b][k][c] and sendIdx[b][k][c] index p.recvs and p.sends.
	recvIdx := make([][][]int, nb)
	sendIdx := make([][][]int, nb)
	for b := range nb {
		recvIdx[b] = make([][]int, steps)
		sendIdx[b] = make([][]int, steps)
	}
	for t := 0; t < nb+steps-1; t++ {
		for b := max(0, t-steps+1); b <= min(t, nb-1); b++ {
			k := t - b
			for c, ch := range chunks(b, recvSeg(k)) {
				it := recvItem{kind: kindReduce, off: ch[0], n: ch[1], afterSend: -1}
				if k < world-1 {
					it.add = true
				} else {
					// All-gather step j overwrites segment rank-j, which
					// reduce-scatter step j sent.
					it.afterSend = sendIdx[b][k-world+1][c]
				}
				recvIdx[b][k] = append(recvIdx[b][k], len(p.recvs))
				p.recvs = append(p.recvs, it)
			}
			for c, ch := range chunks(b, sendSeg(k)) {
				dep := -1
				if k > 0 {
					dep = recvIdx[b][k-1][c]
				}
				sendIdx[b][k] = append(sendIdx[b][k], len(p.sends))
				p.sends = append(p.sends, sendItem{kind: kindReduce, off: ch[0], n: ch[1], dep: dep})
			}
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
			p.recvs = append(p.recvs, recvItem{kind: kindBroadcast, off: off, n: l, afterSend: -1})
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
		p.recvs = append(p.recvs, recvItem{kind: kindDigest, n: 32, afterSend: -1})
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
