// Package collective sums gradients across the ranks of a training generation.
//
// The trainer sees one interface, [Collective], with a single method, AllReduce,
// that sums a float32 vector element-wise across ranks in place. [Single] is the
// one-rank no-op; [Ring] is the bandwidth-optimal ring all-reduce over direct
// connections between workers.
//
// A rank process owns one long-lived [Endpoint] (a listener that outlives
// generations). For each generation the coordinator publishes a [Group] (world,
// ranks, peer addresses, a per-generation secret) and every rank calls
// [Endpoint.Join], which dials the next rank, accepts the previous one, and
// authenticates both connections with a mutual HMAC-SHA256 challenge/response
// over the group's secret. The resulting [Ring] reduces buffers bucket by bucket
// (reduce-scatter then all-gather, each rank sending 2(W-1)/W of the buffer),
// pipelined in chunks so that sending, receiving and adding overlap. The order in
// which contributions are added depends only on the world size and the bucket and
// segment layout, so the same world size gives bit-identical sums run after run.
//
// Every frame carries the generation, the step (see [Ring.SetStep]) and the
// operation's sequence number; frames of another generation or step are refused.
// Every blocking read, write and connect is bounded by the group's Timeout and the
// caller's context. On any error the ring closes its connections, so that the
// failure reaches every rank within milliseconds instead of each rank waiting out
// its own timeout, and the Ring stays broken: the trainer closes it and joins the
// next generation.
//
// Connections go through a [Transport]: [TCP] (optionally TLS, see
// [TLSFromConfig]) for real deployments and [Mem], an in-process twin whose
// links can be cut or stalled, for tests.
//
// The wire format is little-endian; rings refuse to form on big-endian hosts.
package collective
