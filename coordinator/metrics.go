package coordinator

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the coordinator's Prometheus series, registered on the registry the
// caller passes (none when nil).
type metrics struct {
	batches   prometheus.Histogram
	coalesced prometheus.Counter
	// rankSteps is each rank's latest steps/s in the active generation (leader only).
	rankSteps *prometheus.GaugeVec
	// registry counts the checkpoint registry's commits, prunes and pulls.
	registry registryMetrics
}

// heartbeatsCoalesced counts a worker heartbeat the leader did not commit.
func (m *metrics) heartbeatsCoalesced() { m.coalesced.Inc() }

// rankRate records a rank's latest step rate.
func (m *metrics) rankRate(rank int, worker string, stepsPerS float64) {
	if m != nil {
		m.rankSteps.WithLabelValues(strconv.Itoa(rank), worker).Set(stepsPerS)
	}
}

// trainReset forgets the ranks' rates (a new generation, or leadership lost).
func (m *metrics) trainReset() {
	if m != nil {
		m.rankSteps.Reset()
	}
}

func newMetrics(n *Node, reg prometheus.Registerer) *metrics {
	m := &metrics{
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "samdiffsr_coordinator_batch_commands", Help: "Commands per raft entry (batched applies).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7)}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{Name: "samdiffsr_coordinator_heartbeats_coalesced_total",
			Help: "Worker heartbeats the leader recorded without a raft command (liveness already committed recently)."}),
		rankSteps: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "samdiffsr_train_rank_steps_per_second",
			Help: "Each rank's latest training steps per second in the active generation (served by the leader)."}, []string{"rank", "worker"}),
		registry: newRegistryMetrics(),
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
	generation := func(active bool) float64 {
		var v float64
		n.fsm.View(func(s *State) {
			if g := s.LastGeneration(); g != nil {
				if !active {
					v = float64(g.Number)
				} else if !g.Ended {
					v = 1
				}
			}
		})
		return v
	}
	reg.MustRegister(m.registry.collectors()...)
	reg.MustRegister(m.batches, m.coalesced, m.rankSteps,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "samdiffsr_registry_checkpoints", Help: "Checkpoints in the registry."}, func() float64 {
			var v int
			n.fsm.View(func(s *State) { v = len(s.Registry.Records) })
			return float64(v)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "samdiffsr_train_generation", Help: "Number of the latest training generation (0: none yet)."},
			func() float64 { return generation(false) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "samdiffsr_train_generation_active", Help: "1 while a training generation runs."},
			func() float64 { return generation(true) }),
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
