package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/collective"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/dataset"
)

// BenchmarkTrainStepWorld times one diffusion step of the quickstart model
// (configs/quickstart.yaml's sizes, global batch 8 of 32² patches) with 1 and 2
// ranks in this process, the ranks summing gradients over the TCP ring on
// loopback. On one machine the ranks share its cores, so the figure is the cost of
// the split and the all-reduce, not a speed-up.
func BenchmarkTrainStepWorld(b *testing.B) {
	for _, world := range []int{1, 2} {
		b.Run(fmt.Sprintf("ranks=%d", world), func(b *testing.B) {
			cfg := tinySetup(b)
			qs, err := configs.LoadFiles("../configs/quickstart.yaml")
			if err != nil {
				b.Fatal(err)
			}
			cfg.Model, cfg.Diffusion = qs.Model, qs.Diffusion
			cfg.Diffusion.Modulation = "none"
			cfg.Data.PatchSize, cfg.Train.BatchSize, cfg.Train.Steps = 32, 8, 1<<20
			benchWorld(b, cfg, world)
		})
	}
}

func benchWorld(b *testing.B, cfg configs.Config, world int) {
	ctx := context.Background()
	log := discardLog()
	if l, err := openLoader(ctx, cfg, StageDiffusion, nil, 1, log); err != nil {
		b.Fatal(err)
	} else {
		l.Close()
	}
	tp := collective.TCP(nil, nil)
	peers := make([]string, world)
	eps := make([]*collective.Endpoint, world)
	for r := range peers {
		ep, err := collective.Listen(tp, "127.0.0.1:0", log)
		if err != nil {
			b.Fatal(err)
		}
		defer ep.Close()
		eps[r], peers[r] = ep, ep.Addr()
	}
	type rank struct {
		tr   *trainer
		ring *collective.Ring
		net  Net
	}
	ranks := make([]rank, world)
	var wg sync.WaitGroup
	errs := make([]error, world)
	for r := range ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			net, err := NewNet(cfg, cfg.Seed, log)
			if err != nil {
				errs[r] = err
				return
			}
			tr, err := newTrainer(net, cfg, StageDiffusion, 0)
			if err != nil {
				errs[r] = err
				return
			}
			ring, err := eps[r].Join(ctx, collective.Group{Generation: 1, Rank: r, World: world, Peers: peers, Secret: []byte("bench"), Timeout: time.Minute})
			ranks[r], errs[r] = rank{tr: tr, ring: ring, net: net}, err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	step := func(steps int) {
		var wg sync.WaitGroup
		for r := range ranks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rk := ranks[r]
				loader, err := openLoader(ctx, cfg, StageDiffusion, nil, rk.tr.spec.batch, log)
				if err != nil {
					errs[r] = err
					return
				}
				defer loader.Close()
				for i := 0; i < steps; i++ {
					rk.ring.SetStep(int64(rk.tr.step))
					if err := rk.tr.compute(ctx, loader, dataset.Share{Rank: r, World: world}); err != nil {
						errs[r] = err
						return
					}
					if err := rk.tr.reduce(ctx, rk.ring, world); err != nil {
						errs[r] = err
						return
					}
					if _, _, err := rk.tr.agree(ctx, rk.ring, world); err != nil {
						errs[r] = err
						return
					}
					if _, err := rk.tr.apply(); err != nil {
						errs[r] = err
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	step(1) // warm up: buffers, loader
	b.ResetTimer()
	step(b.N)
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cfg.Train.BatchSize)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	for _, rk := range ranks {
		rk.ring.Close()
		rk.net.Close()
	}
}
