package coordinator

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the coordinator's Prometheus series, registered on the registry the
// caller passes (none when nil).
type metrics struct {
	batches   prometheus.Histogram
	coalesced prometheus.Counter
}

// heartbeatsCoalesced counts a worker heartbeat the leader did not commit.
func (m *metrics) heartbeatsCoalesced() { m.coalesced.Inc() }

func newMetrics(n *Node, reg prometheus.Registerer) *metrics {
	m := &metrics{
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "samdiffsr_coordinator_batch_commands", Help: "Commands per raft entry (batched applies).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7)}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{Name: "samdiffsr_coordinator_heartbeats_coalesced_total",
			Help: "Worker heartbeats the leader recorded without a raft command (liveness already committed recently)."}),
	}
	if reg == nil {
		return m
	}
	taskGauge := func(st TaskState) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "samdiffsr_mask_tasks", Help: "Mask tasks in the ledger by state.",
			ConstLabels: prometheus.Labels{"state": string(st)}}, func() float64 {
			var v int
			n.fsm.View(func(s *State) { v = s.Counts[st] })
			return float64(v)
		})
	}
	reg.MustRegister(m.batches, m.coalesced,
		taskGauge(TaskPending), taskGauge(TaskLeased), taskGauge(TaskDone), taskGauge(TaskFailed),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "samdiffsr_mask_duplicate_reports", Help: "Repeat reports recognised and ignored."}, func() float64 {
			var v int
			n.fsm.View(func(s *State) { v = s.Duplicates })
			return float64(v)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "samdiffsr_coordinator_is_leader", Help: "1 while this voter leads."}, func() float64 {
			if n.IsLeader() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "samdiffsr_coordinator_applied_index", Help: "Raft index of the last applied command."}, func() float64 {
			return float64(n.raft.AppliedIndex())
		}),
	)
	return m
}
