package worker

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/collective"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/progress"
)

// ClusterTrainOptions configure RunTrainer.
type ClusterTrainOptions struct {
	// Config is the effective configuration (the same on every rank).
	Config configs.Config
	// Conn is the NATS connection; Job names the job; ID this worker; Host a name
	// for people (default the hostname).
	Conn    *nats.Conn
	Job, ID string
	Host    string
	// Run is the run directory rank 0 writes (RUN/rrdb, RUN/diffusion).
	Run string
	// Stages are trained in order (default rrdb then diffusion); a stage whose
	// folder holds its final checkpoint is skipped.
	Stages []string
	// Transport carries the collective (default TCP, with TLS when
	// cluster.nats.tls_* is set); Addr overrides cluster.train.ring_addr.
	Transport collective.Transport
	Addr      string
	// Log receives messages; Progress, when set, gets rank 0's progress bar.
	Log      *slog.Logger
	Progress io.Writer
	// Metrics, when set, receives the rank's Prometheus series.
	Metrics prometheus.Registerer
	// EnsureMasks makes missing masks before the diffusion stage reads them.
	EnsureMasks func(ctx context.Context, images []dataset.Image, dir string) error
	// Publish, when set, uploads rank 0's checkpoints to the job's registry in the
	// background (checkpoints.Publish).
	Publish PublishFunc
	// OnStep, when set, sees every applied step (after rank 0 recorded it).
	OnStep func(stage string, step int, loss float32)
	// Packed, when set, gives the packed dataset of data.packed (the job's, over
	// NATS); nil reads data.packed as a folder.
	Packed PackedSource
}

// errFatal marks an error that ends this worker's training (not just a generation).
var errFatal = errors.New("fatal")

// RunTrainer serves the train role: it trains the stages as a rank of the
// generations the coordinator forms, until every stage is done or ctx ends.
//
// Each generation: wait for one that includes this worker (reporting readiness
// and the (stage, step) of the in-memory state); meet the other ranks through the
// rendezvous keys; form the ring; when ranks hold different states, the generation's
// Source broadcasts its values and Adam state to all (checksummed); then lockstep
// steps — compute this rank's share of the global batch, all-reduce, vote, apply —
// to the generation's EndStep or the stage's end. A failure of the collective
// (a lost, stuck or partitioned peer) ends the generation on this rank; the state
// stays in memory and the next generation continues from the most advanced
// survivor, so no step is lost, repeated or changed by the world size.
func RunTrainer(ctx context.Context, o ClusterTrainOptions) error {
	if o.Conn == nil || o.Job == "" || o.ID == "" {
		return errors.New("worker: the train role needs a NATS connection, a job and a worker id")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if len(o.Stages) == 0 {
		o.Stages = []string{StageRRDB, StageDiffusion}
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	cfg := o.Config
	if o.Packed == nil && cfg.Data.Packed == PackedNATS {
		o.Packed = NATSSource(o.Conn, o.Job)
	}
	for _, s := range o.Stages {
		sp, err := specFor(cfg, s)
		if err != nil {
			return err
		}
		if sp.steps <= 0 || sp.batch <= 0 {
			return fmt.Errorf("worker: stage %s needs positive steps and batch size (got %d, %d)", s, sp.steps, sp.batch)
		}
	}
	tp := o.Transport
	if tp == nil {
		srv, cli, err := collective.TLSFromConfig(cfg.Cluster.NATS)
		if err != nil {
			return err
		}
		tp = collective.TCP(srv, cli)
	}
	addr := o.Addr
	if addr == "" {
		addr = cfg.Cluster.Train.RingAddr
	}
	ep, err := collective.Listen(tp, addr, o.Log)
	if err != nil {
		return fmt.Errorf("worker: collective endpoint on %s (cluster.train.ring_addr): %w", addr, err)
	}
	defer ep.Close()
	ctl, err := openTrainControl(ctx, o.Conn, o.Job, cfg.Cluster.Worker.Heartbeat, o.Log)
	if err != nil {
		return err
	}
	net, err := NewNet(cfg, cfg.Seed, o.Log)
	if err != nil {
		return err
	}
	defer net.Close()
	r := &rankRunner{o: o, cfg: cfg, ep: ep, ctl: ctl, net: net, log: o.Log.With("worker", o.ID), met: newRankMetrics(o.Metrics)}
	if o.Publish != nil {
		r.pub = newPublisher(o.Publish, cfg.Train.KeepCheckpoints, r.log, o.Metrics)
		defer func() {
			wait := 10 * time.Minute // finish uploading what was written
			if ctx.Err() != nil {
				wait = 30 * time.Second // stopped: do not hold the user up for long
			}
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait)
			r.pub.flush(fctx)
			cancel()
			r.pub.close()
		}()
	}
	defer r.closeStage()
	return r.run(ctx)
}

// rankRunner is one worker's training across generations and stages.
type rankRunner struct {
	o   ClusterTrainOptions
	cfg configs.Config
	ep  *collective.Endpoint
	ctl *trainControl
	net Net
	log *slog.Logger
	met *rankMetrics

	stageIdx int
	tr       *trainer
	sp       startPoint
	loader   *dataset.Loader
	packed   *packedData
	owner    []int
	rec      *recorder
	bar      *progress.Bar
	pub      *publisher
	// lastGen is the generation this rank last ran in; reason why it left it.
	lastGen int
	reason  string
}

func (r *rankRunner) run(ctx context.Context) error {
	if err := r.start(ctx); err != nil {
		return r.finish(ctx, err)
	}
	for {
		for r.tr.step >= r.tr.spec.steps {
			if r.stageIdx+1 >= len(r.o.Stages) {
				return r.finish(ctx, nil)
			}
			if err := r.nextStage(ctx); err != nil {
				return r.finish(ctx, err)
			}
		}
		g, rank, err := r.ctl.awaitGeneration(ctx, r.readyMessage(), r.prefetchFor)
		if err != nil {
			return r.finish(ctx, err)
		}
		err = r.runGeneration(ctx, g, rank)
		r.lastGen = g.Number
		switch {
		case errors.Is(err, errFatal), ctx.Err() != nil:
			return r.finish(ctx, err)
		case err != nil:
			r.reason = err.Error()
			r.log.Warn("generation ended", "generation", g.Number, "step", r.tr.step, "err", err)
		}
	}
}

// readyMessage describes this worker's state to the leader.
func (r *rankRunner) readyMessage() natsutil.TrainReady {
	return natsutil.TrainReady{Worker: r.o.ID, Host: r.o.Host, Addr: r.ep.Addr(), Stage: stageIndex(r.tr.stage), Step: int64(r.tr.step),
		Generation: r.lastGen, Reason: r.reason, TrainHash: r.cfg.TrainHash()}
}

// finish tells the leader this worker wants no more generations and returns err
// (nil when every stage is done). Rank 0 writes a final checkpoint when ctx ended.
func (r *rankRunner) finish(ctx context.Context, err error) error {
	if r.rec != nil && ctx.Err() != nil && r.tr != nil && r.tr.step > 0 && r.rec.checkpoint == "" {
		if serr := r.rec.save(r.tr.step); serr != nil {
			r.log.Warn("final checkpoint", "err", serr)
		}
	}
	reason := natsutil.LeaveFinished
	if err != nil {
		reason = err.Error()
	}
	step, stage := int64(0), 0
	if r.tr != nil {
		step, stage = int64(r.tr.step), stageIndex(r.tr.stage)
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*r.cfg.Cluster.Worker.Heartbeat)
	defer cancel()
	if rerr := r.ctl.ready(fctx, natsutil.TrainReady{Worker: r.o.ID, Host: r.o.Host, Addr: r.ep.Addr(), Stage: stage, Step: step,
		Generation: r.lastGen, Reason: reason, Finished: true, TrainHash: r.cfg.TrainHash()}); rerr != nil {
		r.log.Debug("final report", "err", rerr)
	}
	if err == nil {
		r.log.Info("training finished", "stages", r.o.Stages)
	}
	var f fatalError
	if errors.As(err, &f) {
		return f.err
	}
	return err
}

// fatalError is an error that ends this worker's training.
type fatalError struct{ err error }

func (f fatalError) Error() string        { return f.err.Error() }
func (f fatalError) Unwrap() error        { return f.err }
func (f fatalError) Is(target error) bool { return target == errFatal }

func fatal(err error) error { return fatalError{err} }

// start sets up the first stage that is not complete, loading its state by the
// start policy (the latest checkpoint of the stage, or a fresh start).
func (r *rankRunner) start(ctx context.Context) error {
	sp, err := startPolicy(r.net, startOptions{cfg: r.cfg, stage: r.o.Stages[0], run: r.o.Run, auto: true, log: r.log})
	if err != nil {
		return err
	}
	return r.enterStage(ctx, 0, sp)
}

// nextStage moves to the next stage with the state in memory (the RRDB just
// trained); its own checkpoints, when the stage folder has some, take precedence.
func (r *rankRunner) nextStage(ctx context.Context) error {
	i := r.stageIdx + 1
	stage := r.o.Stages[i]
	sp := startPoint{}
	dir := StageDir(r.o.Run, stage)
	if _, err := checkpoints.Latest(dir); err == nil {
		var err error
		if sp, err = resumeFrom(r.net, startOptions{cfg: r.cfg, stage: stage, run: r.o.Run, log: r.log}, dir); err != nil {
			return err
		}
	} else if stage == StageDiffusion {
		if latest, err := checkpoints.Latest(StageDir(r.o.Run, StageRRDB)); err == nil {
			sp.rrdbSource = latest
		}
	}
	return r.enterStage(ctx, i, sp)
}

// enterStage makes stage i current at sp: trainer, data loader.
func (r *rankRunner) enterStage(ctx context.Context, i int, sp startPoint) error {
	r.closeStage()
	stage := r.o.Stages[i]
	tr, err := newTrainer(r.net, r.cfg, stage, sp.step)
	if err != nil {
		return err
	}
	r.stageIdx, r.tr, r.sp = i, tr, sp
	if sp.step >= tr.spec.steps {
		r.log.Info("stage already complete", "stage", stage, "step", sp.step)
		return nil
	}
	td, err := openTrainData(ctx, r.cfg, stage, r.o.EnsureMasks, tr.spec.batch, r.o.Packed, r.log)
	if err != nil {
		return err
	}
	r.loader, r.packed, r.owner = td.loader, td.packed, nil
	return nil
}

// closeStage releases the stage's loader and recorder.
func (r *rankRunner) closeStage() {
	if r.loader != nil {
		r.loader.Close()
		r.loader = nil
	}
	if r.packed != nil {
		r.packed.close()
		r.packed, r.owner = nil, nil
	}
	if r.rec != nil {
		r.rec.Close()
		r.rec = nil
	}
	if r.bar != nil {
		r.bar.Done()
		r.bar = nil
	}
}

// stageOf returns the index in o.Stages of stage position p (-1 when absent).
func (r *rankRunner) stageOf(p int) int {
	for i, s := range r.o.Stages {
		if stageIndex(s) == p {
			return i
		}
	}
	return -1
}

// runGeneration runs this rank's part of generation g. It returns nil when the
// generation reached its end step or the stage's end, a fatal error when this
// worker must stop, and any other error when the generation failed.
func (r *rankRunner) runGeneration(ctx context.Context, g *natsutil.GenerationInfo, rank int) error {
	world := len(g.Ranks)
	log := r.log.With("generation", g.Number, "rank", rank, "world", world)
	for i, ri := range g.Ranks {
		if ri.TrainHash != r.cfg.TrainHash() {
			return fatal(fmt.Errorf("worker: generation %d: rank %d (%s) trains with configuration hash %.12s, this worker with %.12s; start every rank with the same configuration",
				g.Number, i, ri.Worker, ri.TrainHash, r.cfg.TrainHash()))
		}
	}
	timeout := r.cfg.Cluster.Worker.CollectiveTimeout
	rep, stopProgress := startProgress(r.ctl, r.o.ID, g.Number, rank, stageIndex(r.tr.stage), r.tr.step)
	defer stopProgress()
	if r.packed != nil {
		rep.setData(r.packed.placement)
	}
	peers, err := r.ctl.rendezvous(ctx, g, rank, r.ep.Addr(), timeout)
	if err != nil {
		return err
	}
	secret, err := hex.DecodeString(g.Secret)
	if err != nil {
		return fmt.Errorf("worker: generation %d: secret: %w", g.Number, err)
	}
	hosts := make([]string, world)
	for i, ri := range g.Ranks {
		hosts[i] = ri.Worker + "@" + peers[i]
	}
	ring, err := r.ep.Join(ctx, collective.Group{Generation: g.Number, Rank: rank, World: world, Peers: peers, Hosts: hosts,
		Secret: secret, Timeout: timeout})
	if err != nil {
		return fmt.Errorf("worker: generation %d: join the ring: %w", g.Number, err)
	}
	defer ring.Close()
	rep.setStats(ring.Stats)
	defer rep.setStats(nil)
	if err := r.syncState(ctx, g, rank, ring, log); err != nil {
		return err
	}
	if rank == 0 {
		if err := r.openRecorder(world); err != nil {
			return fatal(err)
		}
		if r.bar == nil {
			r.bar = progress.New(progress.Options{Label: "train " + r.tr.stage, Unit: "steps", Total: int64(r.tr.spec.steps), Out: r.o.Progress, Log: r.log})
		}
		r.bar.Set(int64(r.tr.step))
	} else if r.rec != nil {
		r.rec.Close()
		r.rec = nil
	}
	if err := r.placeShards(ctx, g, rank); err != nil {
		return fatal(err)
	}
	end := r.tr.spec.steps
	if g.EndStep > 0 && int(g.EndStep) < end {
		end = int(g.EndStep)
	}
	log.Info("generation started", "stage", r.tr.stage, "step", r.tr.step, "end", end)
	// writerBusy says rank 0 validates or writes a checkpoint after the step just
	// applied: the others then wait for it up to cluster.train.writer_timeout.
	writerBusy := false
	r.met.generation(g.Number, rank)
	for r.tr.step < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		ring.SetStep(int64(r.tr.step))
		t0 := time.Now()
		if err := r.tr.compute(ctx, r.loader, r.share(rank, world)); err != nil {
			return fatal(err)
		}
		t1 := time.Now()
		if writerBusy {
			ring.SetTimeout(r.cfg.Cluster.Train.WriterTimeout) // rank 0 validated or saved after the last step
		}
		if err := r.tr.reduce(ctx, ring, world); err != nil {
			return err
		}
		ring.SetTimeout(0)
		ok, loss, err := r.tr.agree(ctx, ring, world)
		if err != nil {
			return err
		}
		if !ok {
			last := ""
			if r.rec != nil {
				last = r.rec.checkpoint
			}
			return fatal(r.tr.nonFiniteError(last))
		}
		t2 := time.Now()
		lr, err := r.tr.apply()
		if err != nil {
			return fatal(err)
		}
		t3 := time.Now()
		done := r.tr.step
		if r.rec != nil {
			if err := r.rec.stepDone(ctx, done, r.tr.spec.steps, float64(loss), lr, r.tr.stepBands); err != nil {
				return fatal(err)
			}
		}
		writerBusy = writerStep(r.cfg, r.tr.stage, done, r.tr.spec.steps)
		if r.bar != nil && rank == 0 {
			r.bar.SetExtra(fmt.Sprintf("loss %.4f lr %.2e world %d", loss, lr, world))
			r.bar.Set(int64(done))
		}
		if rep.add(done, t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), float64(loss), t3) {
			log.Info("first step of the generation applied", "step", done, "at_unix_ms", t3.UnixMilli())
		}
		r.met.step(done, t1.Sub(t0), t2.Sub(t1))
		if r.o.OnStep != nil {
			r.o.OnStep(r.tr.stage, done-1, loss)
		}
	}
	if writerBusy && world > 1 {
		// Leave together: nobody reports the generation over while rank 0 still
		// validates or writes (the leader would form the next one without it).
		ring.SetTimeout(r.cfg.Cluster.Train.WriterTimeout)
		if err := ring.AllReduce(ctx, []float32{0}); err != nil {
			return fmt.Errorf("worker: waiting for rank 0 to validate or save step %d: %w", r.tr.step, err)
		}
	}
	r.reason = natsutil.LeaveBoundary
	if r.tr.step >= r.tr.spec.steps {
		r.reason = natsutil.LeaveStage
	}
	return nil
}

// writerStep says whether rank 0's recorder validates or writes a checkpoint after
// step done of a stage of steps steps (the same answer on every rank).
func writerStep(cfg configs.Config, stage string, done, steps int) bool {
	return validationStep(cfg, stage, done) || (cfg.Train.CkptEvery > 0 && done%cfg.Train.CkptEvery == 0) || done == steps
}

// syncState brings every rank to the generation's start state: when some rank's
// state is elsewhere, Source broadcasts its state (values and Adam moments,
// checksummed by the collective) and the others restore it.
func (r *rankRunner) syncState(ctx context.Context, g *natsutil.GenerationInfo, rank int, ring *collective.Ring, log *slog.Logger) error {
	need := false
	for _, ri := range g.Ranks {
		if ri.Stage != g.Stage || ri.Step != g.StartStep {
			need = true
		}
	}
	if !need {
		return nil
	}
	if stageIndex(r.tr.stage) != g.Stage {
		i := r.stageOf(g.Stage)
		if i < 0 {
			return fatal(fmt.Errorf("worker: generation %d trains stage %s, which this worker was not asked to train", g.Number, stageName(g.Stage)))
		}
		if err := r.enterStage(ctx, i, startPoint{step: int(g.StartStep)}); err != nil {
			return fatal(err)
		}
	}
	t0 := time.Now()
	m := r.net.Model()
	buf := make([]byte, stateSize(m, len(r.tr.grads)))
	if rank == g.Source {
		st, err := r.tr.snapshot()
		if err != nil {
			return fatal(err)
		}
		if err := st.encode(buf); err != nil {
			return fatal(err)
		}
	}
	ring.SetStep(g.StartStep)
	if err := ring.Broadcast(ctx, g.Source, buf); err != nil {
		return fmt.Errorf("worker: generation %d: state from rank %d: %w", g.Number, g.Source, err)
	}
	if rank != g.Source {
		st, err := decodeState(buf, len(m.RRDBValues())+len(m.UNetValues()), len(r.tr.grads))
		if err != nil {
			return err
		}
		if st.Stage != g.Stage || st.Step != g.StartStep {
			return fmt.Errorf("worker: generation %d: rank %d sent the state of stage %d step %d, want stage %d step %d", g.Number, g.Source, st.Stage, st.Step, g.Stage, g.StartStep)
		}
		if err := r.tr.restore(st); err != nil {
			return fatal(err)
		}
		if r.rec != nil {
			r.rec.Close()
			r.rec = nil
		}
	}
	log.Info("state synchronised", "from_rank", g.Source, "step", g.StartStep, "bytes", len(buf), "seconds", fmt.Sprintf("%.3f", time.Since(t0).Seconds()))
	return nil
}

// openRecorder makes sure rank 0 has the current stage's recorder.
func (r *rankRunner) openRecorder(world int) error {
	if r.rec != nil && r.rec.stage == r.tr.stage {
		r.rec.world = world
		return nil
	}
	if r.rec != nil {
		r.rec.Close()
	}
	sp := r.sp
	sp.step = r.tr.step
	sp.resumed = r.tr.step > 0
	rec, err := openRecorder(r.cfg, r.tr.stage, StageDir(r.o.Run, r.tr.stage), sp, r.net, r.log)
	if err != nil {
		return err
	}
	rec.world = world
	rec.pub = r.pub
	r.rec = rec
	return nil
}

// placeShards makes this rank hold its partitions' shards for generation g (with
// data.packed) and sets the tile owners its share uses.
func (r *rankRunner) placeShards(ctx context.Context, g *natsutil.GenerationInfo, rank int) error {
	if r.packed == nil {
		return nil
	}
	workers := make([]string, len(g.Ranks))
	for i, ri := range g.Ranks {
		workers[i] = ri.Worker
	}
	r.loader.StopPrefetch()
	owner, err := r.packed.place(ctx, workers, rank)
	if err != nil {
		return err
	}
	r.owner = owner
	return nil
}

// prefetchFor starts fetching, in the background, the shards this worker would
// hold if the leader admitted it into g's world (data.packed only). A worker left
// out of a generation waits for an admission boundary anyway, so its fetch costs
// the running ranks nothing, and its first generation starts from a warm cache.
func (r *rankRunner) prefetchFor(g *natsutil.GenerationInfo) {
	if r.packed == nil {
		return
	}
	workers := make([]string, 0, len(g.Ranks)+1)
	for _, ri := range g.Ranks {
		workers = append(workers, ri.Worker)
	}
	r.packed.prefetchFor(append(workers, r.o.ID), len(workers))
}

// share is the part of every global batch this rank computes: the samples of its
// shards with data.packed, else a contiguous range.
func (r *rankRunner) share(rank, world int) dataset.Share {
	return dataset.Share{Rank: rank, World: world, Owner: r.owner}
}
