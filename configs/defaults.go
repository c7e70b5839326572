package configs

import "time"

// Default returns the paper's configuration (METHOD §5, `sam_diffsr_x4.yaml`).
// It is the one place where default values live; files and environment override it.
func Default() Config {
	return Config{
		Seed: 1,
		Data: Data{
			Scale:         4,
			PatchSize:     160,
			TileSize:      320,
			TileThreshold: 160,
			ValImages:     0,
			Synthetic:     Synthetic{Width: 512, Height: 512},
			MaxPixels:     89_478_485, // Pillow's PIL.Image.MAX_IMAGE_PIXELS (imagefile.DefaultMaxPixels)
		},
		Masks: Masks{
			Segmenter: "builtin",
			Builtin:   Builtin{Sigma: 0.8, K: 500, MinSize: 1000}, // tuned on DIV2K-size photos: tens to a few hundred regions (BENCHMARKS.md)
			SAM: SAM{
				PointsPerSide:        32,
				PointsPerBatch:       64,
				MaskThreshold:        0,
				PredIoUThresh:        0.88,
				StabilityScoreThresh: 0.95,
				StabilityScoreOffset: 1.0,
				BoxNMSThresh:         0.7,
				MinMaskRegionArea:    0,
			},
			SPEMean:            "region",
			MaskCrop:           "aligned",
			ReduceSingleRegion: true,
		},
		Model: Model{
			Backend: "auto",
			RRDB:    RRDB{NF: 64, NB: 17, GC: 32},
			UNet:    UNet{Dim: 64, DimMults: []int{1, 2, 3, 4}},
		},
		Diffusion: Diffusion{
			Timesteps:    100,
			BetaSchedule: "cosine",
			BetaS:        0.008,
			Modulation:   "paper",
		},
		Train: Train{
			Stage:         "all",
			BatchSize:     16,
			Steps:         400000,
			LR:            2e-4,
			LRSchedule:    "cosine",
			LRStep:        200000,
			LRGamma:       0.5,
			RRDBSteps:     100000,
			RRDBBatchSize: 64,
			RRDBLR:        2e-4,
			ValEvery:      4000,
			CkptEvery:     4000,
			LogEvery:      100,
			KeepBest:      true,
			Out:           "runs/sam_diffsr_x4",
		},
		Eval: Eval{CropBorder: 0},
		SR:   SR{Sampler: "ddpm", Steps: 100, Eta: 0},
		Cluster: Cluster{
			NATS: NATS{Job: "default"},
			Coordinator: Coordinator{
				ID:         "coord-1",
				RaftAddr:   "127.0.0.1:7400",
				DataDir:    "coordinator-data",
				LeaseTTL:   2 * time.Minute,
				MaxDeliver: 4,
			},
			Worker: Worker{
				Roles:             []string{"mask"},
				Count:             2,
				AckWait:           30 * time.Second,
				Heartbeat:         2 * time.Second,
				CollectiveTimeout: 60 * time.Second,
			},
			Train: ClusterTrain{
				MinWorkers:    1,
				AdmitEvery:    100,
				RegroupGrace:  2 * time.Second,
				LostAfter:     15 * time.Second,
				WriterTimeout: 30 * time.Minute,
				RingAddr:      "127.0.0.1:0",
			},
		},
	}
}
