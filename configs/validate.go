package configs

import (
	"fmt"
	"net"
	"slices"
	"strings"
)

// Validate checks ranges and cross-field rules and returns every problem found.
func (c Config) Validate() []Problem {
	v := &validator{}
	v.data(c)
	v.masks(c)
	v.model(c)
	v.diffusion(c)
	v.train(c)
	v.eval(c)
	v.sr(c)
	v.cluster(c)
	return v.ps
}

// validator collects the problems of one configuration, section by section.
type validator struct{ ps []Problem }

func (v *validator) bad(key string, val any, allowed string, args ...any) {
	v.ps = append(v.ps, Problem{Key: key, Value: fmt.Sprintf("%v", val), Allowed: fmt.Sprintf(allowed, args...)})
}

func (v *validator) oneOf(key, val string, allowed ...string) {
	if !slices.Contains(allowed, val) {
		v.bad(key, fmt.Sprintf("%q", val), "allowed: %s", strings.Join(allowed, ", "))
	}
}

func (v *validator) positive(key string, n int) {
	if n <= 0 {
		v.bad(key, n, "must be a positive integer")
	}
}

func (v *validator) nonNeg(key string, n int) {
	if n < 0 {
		v.bad(key, n, "must be >= 0")
	}
}

// data checks the data.* keys.
func (v *validator) data(c Config) {
	if c.Data.Scale != 4 {
		v.bad("data.scale", c.Data.Scale, "only 4 is supported (x4 super-resolution)")
	}
	if c.Data.PatchSize <= 0 || c.Data.PatchSize%8 != 0 {
		v.bad("data.patch_size", c.Data.PatchSize, "must be a positive multiple of 8 (the U-Net halves it three times)")
	}
	if c.Data.TileSize < c.Data.PatchSize {
		v.bad("data.tile_size", c.Data.TileSize, "must be >= data.patch_size (%d)", c.Data.PatchSize)
	} else if c.Data.TileSize%c.Data.Scale != 0 && c.Data.Scale > 0 {
		v.bad("data.tile_size", c.Data.TileSize, "must be a multiple of data.scale (%d)", c.Data.Scale)
	}
	if c.Data.TileThreshold < c.Data.PatchSize || c.Data.TileThreshold > c.Data.TileSize {
		v.bad("data.tile_threshold", c.Data.TileThreshold, "must be between data.patch_size (%d) and data.tile_size (%d)", c.Data.PatchSize, c.Data.TileSize)
	}
	v.nonNeg("data.val_images", c.Data.ValImages)
	v.nonNeg("data.partitions", c.Data.Partitions)
	if c.Data.CacheMaxBytes < 0 {
		v.bad("data.cache_max_bytes", c.Data.CacheMaxBytes, "must be >= 0 (0: no bound)")
	}
	if c.Data.ValSize < 0 || c.Data.ValSize%8 != 0 {
		v.bad("data.val_size", c.Data.ValSize, "must be 0 (full image) or a positive multiple of 8")
	}
	if c.Data.MaxPixels < 256 {
		v.bad("data.max_pixels", c.Data.MaxPixels, "must be at least 256 (default 89478485, Pillow's decompression-bomb limit)")
	}
	v.nonNeg("data.synthetic.n", c.Data.Synthetic.N)
	if c.Data.Synthetic.N > 0 {
		for _, kv := range []struct {
			k string
			v int
		}{{"data.synthetic.width", c.Data.Synthetic.Width}, {"data.synthetic.height", c.Data.Synthetic.Height}} {
			if kv.v < c.Data.PatchSize || kv.v%8 != 0 {
				v.bad(kv.k, kv.v, "must be a multiple of 8 and >= data.patch_size (%d)", c.Data.PatchSize)
			}
		}
		if c.Data.Synthetic.Dir == "" {
			v.bad("data.synthetic.dir", `""`, "set a folder for the generated images when data.synthetic.n > 0")
		}
	}
}

// masks checks the masks.* keys.
func (v *validator) masks(c Config) {
	v.oneOf("masks.segmenter", c.Masks.Segmenter, "builtin", "sam-onnx")
	v.oneOf("masks.spe_mean", c.Masks.SPEMean, "region", "image")
	v.oneOf("masks.mask_crop", c.Masks.MaskCrop, "aligned", "reference")
	v.nonNeg("masks.workers", c.Masks.Workers)
	if c.Masks.Builtin.Sigma < 0 || c.Masks.Builtin.Sigma > 10 {
		v.bad("masks.builtin.sigma", c.Masks.Builtin.Sigma, "must be in [0, 10]")
	}
	if c.Masks.Builtin.K <= 0 {
		v.bad("masks.builtin.k", c.Masks.Builtin.K, "must be > 0")
	}
	v.nonNeg("masks.builtin.min_size", c.Masks.Builtin.MinSize)
	s := c.Masks.SAM
	v.positive("masks.sam.points_per_side", s.PointsPerSide)
	v.positive("masks.sam.points_per_batch", s.PointsPerBatch)
	for _, kv := range []struct {
		k string
		v float64
	}{{"masks.sam.pred_iou_thresh", s.PredIoUThresh}, {"masks.sam.stability_score_thresh", s.StabilityScoreThresh}, {"masks.sam.box_nms_thresh", s.BoxNMSThresh}} {
		if kv.v < 0 || kv.v > 1 {
			v.bad(kv.k, kv.v, "must be in [0, 1]")
		}
	}
	v.nonNeg("masks.sam.min_mask_region_area", s.MinMaskRegionArea)
	if c.Masks.Segmenter == "sam-onnx" {
		if s.Encoder == "" {
			v.bad("masks.sam.encoder", `""`, "set the path of the SAM image-encoder ONNX file when masks.segmenter is sam-onnx")
		}
		if s.Decoder == "" {
			v.bad("masks.sam.decoder", `""`, "set the path of the SAM mask-decoder ONNX file when masks.segmenter is sam-onnx")
		}
	}
}

// model checks the model.* keys.
func (v *validator) model(c Config) {
	v.oneOf("model.backend", c.Model.Backend, "auto", "cpu", "cuda")
	v.positive("model.rrdb.nf", c.Model.RRDB.NF)
	if c.Model.RRDB.NB < 2 {
		v.bad("model.rrdb.nb", c.Model.RRDB.NB, "must be >= 2 (the U-Net is conditioned on RRDB feature maps 2, 5, 8, ... of nb+1; paper: 17)")
	}
	v.positive("model.rrdb.gc", c.Model.RRDB.GC)
	v.positive("model.unet.dim", c.Model.UNet.Dim)
	if len(c.Model.UNet.DimMults) < 2 {
		v.bad("model.unet.dim_mults", c.Model.UNet.DimMults, "needs at least 2 levels, e.g. [1, 2, 3, 4]")
	}
	for i, m := range c.Model.UNet.DimMults {
		if m <= 0 {
			v.bad(fmt.Sprintf("model.unet.dim_mults[%d]", i), m, "must be a positive integer")
		}
	}
	if n := len(c.Model.UNet.DimMults); n >= 2 && c.Data.PatchSize > 0 && c.Data.PatchSize%(1<<(n-1)) != 0 {
		v.bad("data.patch_size", c.Data.PatchSize, "must be divisible by 2^(levels-1) = %d for model.unet.dim_mults", 1<<(n-1))
	}
}

// diffusion checks the diffusion.* keys.
func (v *validator) diffusion(c Config) {
	if c.Diffusion.Timesteps < 2 || c.Diffusion.Timesteps > 10000 {
		v.bad("diffusion.timesteps", c.Diffusion.Timesteps, "must be in [2, 10000] (paper: 100)")
	}
	v.oneOf("diffusion.beta_schedule", c.Diffusion.BetaSchedule, "cosine")
	if c.Diffusion.BetaS <= 0 || c.Diffusion.BetaS >= 1 {
		v.bad("diffusion.beta_s", c.Diffusion.BetaS, "must be in (0, 1) (paper: 0.008)")
	}
	v.oneOf("diffusion.modulation", c.Diffusion.Modulation, "paper", "reference", "none")
}

// train checks the train.* keys.
func (v *validator) train(c Config) {
	v.oneOf("train.stage", c.Train.Stage, "rrdb", "diffusion", "all")
	v.positive("train.batch_size", c.Train.BatchSize)
	v.positive("train.steps", c.Train.Steps)
	v.positive("train.rrdb_steps", c.Train.RRDBSteps)
	v.positive("train.rrdb_batch_size", c.Train.RRDBBatchSize)
	if c.Train.LR <= 0 || c.Train.LR > 1 {
		v.bad("train.lr", c.Train.LR, "must be in (0, 1] (paper: 2e-4)")
	}
	if c.Train.RRDBLR <= 0 || c.Train.RRDBLR > 1 {
		v.bad("train.rrdb_lr", c.Train.RRDBLR, "must be in (0, 1] (paper: 2e-4)")
	}
	v.oneOf("train.lr_schedule", c.Train.LRSchedule, "cosine", "step", "constant")
	if c.Train.LRSchedule == "step" {
		v.positive("train.lr_step", c.Train.LRStep)
		if c.Train.LRGamma <= 0 || c.Train.LRGamma > 1 {
			v.bad("train.lr_gamma", c.Train.LRGamma, "must be in (0, 1] (reference: 0.5)")
		}
	}
	v.nonNeg("train.val_every", c.Train.ValEvery)
	v.nonNeg("train.ckpt_every", c.Train.CkptEvery)
	v.positive("train.log_every", c.Train.LogEvery)
	v.nonNeg("train.keep_checkpoints", c.Train.KeepCheckpoints)
	v.nonNeg("train.keep_every", c.Train.KeepEvery)
	if c.Train.Out == "" {
		v.bad("train.out", `""`, "set a run directory")
	}
}

// eval checks the eval.* keys.
func (v *validator) eval(c Config) {
	if c.Eval.CropBorder < 0 || c.Eval.CropBorder > 64 {
		v.bad("eval.crop_border", c.Eval.CropBorder, "must be in [0, 64] (paper tables: 0; most SR papers: 4)")
	}
}

// sr checks the sr.* keys.
func (v *validator) sr(c Config) {
	v.oneOf("sr.sampler", c.SR.Sampler, "ddpm", "ddim")
	if c.SR.Sampler == "ddim" {
		if c.SR.Steps < 1 {
			v.bad("sr.steps", c.SR.Steps, "must be a positive number of steps for sr.sampler ddim (e.g. 10 or 20; more than the model's diffusion.timesteps means all of them)")
		}
		if !(c.SR.Eta >= 0 && c.SR.Eta <= 1) {
			v.bad("sr.eta", c.SR.Eta, "must be in [0, 1] (0: deterministic DDIM)")
		}
	}
}

// cluster checks the cluster.* keys.
func (v *validator) cluster(c Config) {
	if c.Cluster.NATS.Job == "" || strings.ContainsAny(c.Cluster.NATS.Job, " .*>") {
		v.bad("cluster.nats.job", fmt.Sprintf("%q", c.Cluster.NATS.Job), "must be a non-empty name without spaces, '.', '*' or '>'")
	}
	if c.Cluster.NATS.Token != "" && c.Cluster.NATS.User != "" {
		v.bad("cluster.nats.token", "(set)", "use either cluster.nats.token or cluster.nats.user/password, not both")
	}
	if (c.Cluster.NATS.TLSCert == "") != (c.Cluster.NATS.TLSKey == "") {
		v.bad("cluster.nats.tls_cert", c.Cluster.NATS.TLSCert, "cluster.nats.tls_cert and cluster.nats.tls_key must be set together")
	}
	if c.Cluster.Coordinator.MaxDeliver < 1 || c.Cluster.Coordinator.MaxDeliver > 100 {
		v.bad("cluster.coordinator.max_deliver", c.Cluster.Coordinator.MaxDeliver, "must be in [1, 100]")
	}
	if c.Cluster.Coordinator.LeaseTTL <= 0 {
		v.bad("cluster.coordinator.lease_ttl", c.Cluster.Coordinator.LeaseTTL, "must be a positive duration, e.g. 2m")
	}
	for _, r := range c.Cluster.Worker.Roles {
		v.oneOf("cluster.worker.roles", r, "mask", "train")
	}
	v.nonNeg("cluster.worker.count", c.Cluster.Worker.Count)
	if c.Cluster.Worker.AckWait <= 0 {
		v.bad("cluster.worker.ack_wait", c.Cluster.Worker.AckWait, "must be a positive duration, e.g. 30s")
	}
	if c.Cluster.Worker.Heartbeat <= 0 {
		v.bad("cluster.worker.heartbeat", c.Cluster.Worker.Heartbeat, "must be a positive duration, e.g. 2s")
	}
	if c.Cluster.Worker.CollectiveTimeout <= 0 {
		v.bad("cluster.worker.collective_timeout", c.Cluster.Worker.CollectiveTimeout, "must be a positive duration, e.g. 60s")
	}
	if c.Cluster.Train.MinWorkers < 1 {
		v.bad("cluster.train.min_workers", c.Cluster.Train.MinWorkers, "must be at least 1")
	}
	if mw := c.Cluster.Train.MaxWorkers; mw < 0 || (mw > 0 && mw < c.Cluster.Train.MinWorkers) {
		v.bad("cluster.train.max_workers", mw, "must be 0 (no limit) or at least cluster.train.min_workers")
	}
	v.nonNeg("cluster.train.admit_every", c.Cluster.Train.AdmitEvery)
	if c.Cluster.Train.RegroupGrace <= 0 {
		v.bad("cluster.train.regroup_grace", c.Cluster.Train.RegroupGrace, "must be a positive duration, e.g. 2s")
	}
	if c.Cluster.Train.WriterTimeout <= 0 {
		v.bad("cluster.train.writer_timeout", c.Cluster.Train.WriterTimeout, "must be a positive duration, e.g. 30m (longer than a validation)")
	}
	if c.Cluster.Train.LostAfter <= 0 {
		v.bad("cluster.train.lost_after", c.Cluster.Train.LostAfter, "must be a positive duration, e.g. 15s")
	}
	for _, kv := range []struct{ key, addr string }{{"cluster.train.ring_addr", c.Cluster.Train.RingAddr}, {"cluster.nats.listen", c.Cluster.NATS.Listen}, {"cluster.coordinator.raft_addr", c.Cluster.Coordinator.RaftAddr}, {"cluster.metrics_addr", c.Cluster.MetricsAddr}} {
		if kv.addr == "" {
			continue
		}
		if host, _, err := net.SplitHostPort(kv.addr); err != nil || host == "" {
			v.bad(kv.key, fmt.Sprintf("%q", kv.addr), "must be HOST:PORT with a host (127.0.0.1 or a private address; 0.0.0.0 only on purpose)")
		}
	}
	for _, k := range c.Cluster.NATS.NKeys {
		if !strings.HasPrefix(k, "U") || len(k) != 56 {
			v.bad("cluster.nats.nkeys", k, "must be public user nkeys (56 characters starting with U)")
		}
	}
}
