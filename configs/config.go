// Package configs holds the configuration schema of samdiffsr (one Go struct tree),
// its defaults (in Default, the only place defaults live), loading from layered YAML
// files plus SAMDIFFSR_* environment overrides, and validation.
//
// Keys are snake_case and mirror the struct tree: `train.batch_size` is
// Config.Train.BatchSize and can be overridden with SAMDIFFSR_TRAIN_BATCH_SIZE.
package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Config is the whole effective configuration of every samdiffsr role.
type Config struct {
	// Seed drives every random choice (patch sampling, noise, init) deterministically.
	Seed int64 `mapstructure:"seed" yaml:"seed"`
	// Data describes where training and validation images come from.
	Data Data `mapstructure:"data" yaml:"data"`
	// Masks configures segmentation and the structural position encoding (SPE).
	Masks Masks `mapstructure:"masks" yaml:"masks"`
	// Model sizes the RRDB encoder and the U-Net denoiser.
	Model Model `mapstructure:"model" yaml:"model"`
	// Diffusion configures the noise schedule and the mask modulation.
	Diffusion Diffusion `mapstructure:"diffusion" yaml:"diffusion"`
	// Train configures optimisation, validation and checkpointing.
	Train Train `mapstructure:"train" yaml:"train"`
	// Eval configures metric computation.
	Eval Eval `mapstructure:"eval" yaml:"eval"`
	// SR configures the sampler of super-resolution and validation.
	SR SR `mapstructure:"sr" yaml:"sr"`
	// Cluster configures NATS, the raft coordinator and workers.
	Cluster Cluster `mapstructure:"cluster" yaml:"cluster"`
}

// Data describes the dataset and how patches are cut from it.
type Data struct {
	// Root is a folder holding DIV2K/Flickr2K layouts or a plain folder of HR images.
	Root string `mapstructure:"root" yaml:"root"`
	// ValRoot holds held-out HR images for validation; empty means DIV2K valid under Root if present.
	ValRoot string `mapstructure:"val_root" yaml:"val_root"`
	// CacheDir holds the tile cache's files (decoded once) and, under shards/, a
	// worker's cached shards of a packed dataset; empty means <Root>/.samdiffsr-cache.
	CacheDir string `mapstructure:"cache_dir" yaml:"cache_dir"`
	// Packed, when set, trains from a packed dataset (`samdiffsr data pack --out`)
	// instead of Root's images: its folder, or "nats" for the one pushed to the job
	// (`samdiffsr data push`). Each rank then holds only its partitions' shards.
	Packed string `mapstructure:"packed" yaml:"packed"`
	// Partitions is the number of groups of shards assigned to ranks (0: one per shard).
	Partitions int `mapstructure:"partitions" yaml:"partitions"`
	// CacheMaxBytes bounds a worker's shard cache (least recently used shards go
	// first; 0: no bound).
	CacheMaxBytes int64 `mapstructure:"cache_max_bytes" yaml:"cache_max_bytes"`
	// Synthetic, when N > 0, makes procedural images instead of reading Root.
	Synthetic Synthetic `mapstructure:"synthetic" yaml:"synthetic"`
	// Scale is the super-resolution factor; only 4 is supported.
	Scale int `mapstructure:"scale" yaml:"scale"`
	// PatchSize is the HR patch side in pixels (LR side is PatchSize/Scale); a multiple of 8.
	PatchSize int `mapstructure:"patch_size" yaml:"patch_size"`
	// TileSize is the side of the tiles images are cut into before patch sampling (reference: 320).
	TileSize int `mapstructure:"tile_size" yaml:"tile_size"`
	// TileThreshold drops edge tiles smaller than this (reference: 160).
	TileThreshold int `mapstructure:"tile_threshold" yaml:"tile_threshold"`
	// ValImages is how many held-out images validation uses (0 = all).
	ValImages int `mapstructure:"val_images" yaml:"val_images"`
	// ValSize center-crops validation HR images to this side (0 = full image).
	ValSize int `mapstructure:"val_size" yaml:"val_size"`
	// MaxPixels refuses, from the file header alone, any image claiming more pixels
	// than this, before decoding it (a decompression bomb). Default: Pillow's limit,
	// 89,478,485 pixels.
	MaxPixels int64 `mapstructure:"max_pixels" yaml:"max_pixels"`
}

// Synthetic configures procedural training images (`samdiffsr data synth`).
type Synthetic struct {
	// N is the number of images to generate; 0 disables synthetic data.
	N int `mapstructure:"n" yaml:"n"`
	// Width and Height of each image in pixels (multiples of 8).
	Width  int `mapstructure:"width" yaml:"width"`
	Height int `mapstructure:"height" yaml:"height"`
	// Dir is where generated images are written.
	Dir string `mapstructure:"dir" yaml:"dir"`
}

// Masks configures segmentation and SPE (METHOD §2).
type Masks struct {
	// Dir holds label maps (16-bit PNG + JSON sidecar) named after each image.
	Dir string `mapstructure:"dir" yaml:"dir"`
	// Segmenter is "builtin" (graph segmentation) or "sam-onnx".
	Segmenter string `mapstructure:"segmenter" yaml:"segmenter"`
	// Workers is the number of images segmented in parallel by `samdiffsr masks` (0 = number of CPUs).
	Workers int `mapstructure:"workers" yaml:"workers"`
	// Builtin parameterises the built-in Felzenszwalb-Huttenlocher segmenter.
	Builtin Builtin `mapstructure:"builtin" yaml:"builtin"`
	// SAM parameterises the SAM automatic mask generator run through ONNX Runtime.
	SAM SAM `mapstructure:"sam" yaml:"sam"`
	// SPEMean is "region" (paper: mean of R over the region) or "image" (reference: sum / (H·W)).
	SPEMean string `mapstructure:"spe_mean" yaml:"spe_mean"`
	// MaskCrop is "aligned" (E cut at the HR patch) or "reference" (LR window, bilinear x4).
	MaskCrop string `mapstructure:"mask_crop" yaml:"mask_crop"`
	// ReduceSingleRegion zeroes E for a patch that lies in a single region (paper Table 6).
	ReduceSingleRegion bool `mapstructure:"reduce_single_region" yaml:"reduce_single_region"`
}

// Builtin parameterises the built-in graph segmenter.
type Builtin struct {
	// Sigma is the Gaussian smoothing applied before building the graph.
	Sigma float64 `mapstructure:"sigma" yaml:"sigma"`
	// K is the scale parameter of the k/|C| merge threshold (larger: bigger regions).
	K float64 `mapstructure:"k" yaml:"k"`
	// MinSize is the minimum component size in pixels; smaller ones are merged into a neighbour.
	MinSize int `mapstructure:"min_size" yaml:"min_size"`
}

// SAM parameterises the SAM automatic mask generator (defaults are SAM's own).
type SAM struct {
	// Encoder and Decoder are paths to the two ONNX files of the standard export.
	Encoder string `mapstructure:"encoder" yaml:"encoder"`
	Decoder string `mapstructure:"decoder" yaml:"decoder"`
	// Library is the path of libonnxruntime.so; empty means $ONNXRUNTIME_LIB.
	Library              string  `mapstructure:"library" yaml:"library"`
	PointsPerSide        int     `mapstructure:"points_per_side" yaml:"points_per_side"`
	PointsPerBatch       int     `mapstructure:"points_per_batch" yaml:"points_per_batch"`
	MaskThreshold        float64 `mapstructure:"mask_threshold" yaml:"mask_threshold"`
	PredIoUThresh        float64 `mapstructure:"pred_iou_thresh" yaml:"pred_iou_thresh"`
	StabilityScoreThresh float64 `mapstructure:"stability_score_thresh" yaml:"stability_score_thresh"`
	StabilityScoreOffset float64 `mapstructure:"stability_score_offset" yaml:"stability_score_offset"`
	BoxNMSThresh         float64 `mapstructure:"box_nms_thresh" yaml:"box_nms_thresh"`
	MinMaskRegionArea    int     `mapstructure:"min_mask_region_area" yaml:"min_mask_region_area"`
}

// Model sizes the networks (METHOD §3).
type Model struct {
	// Backend is "auto", "cpu" or "cuda".
	Backend string `mapstructure:"backend" yaml:"backend"`
	// RRDB sizes the LR encoder.
	RRDB RRDB `mapstructure:"rrdb" yaml:"rrdb"`
	// UNet sizes the denoiser.
	UNet UNet `mapstructure:"unet" yaml:"unet"`
}

// RRDB sizes the RRDB encoder.
type RRDB struct {
	NF int `mapstructure:"nf" yaml:"nf"`
	NB int `mapstructure:"nb" yaml:"nb"`
	GC int `mapstructure:"gc" yaml:"gc"`
}

// UNet sizes the conditional U-Net denoiser.
type UNet struct {
	// Dim is the base channel count (paper: 64).
	Dim int `mapstructure:"dim" yaml:"dim"`
	// DimMults multiplies Dim per level (paper: [1, 2, 3, 4]).
	DimMults []int `mapstructure:"dim_mults" yaml:"dim_mults,flow"`
}

// Diffusion configures the diffusion process (METHOD §4).
type Diffusion struct {
	// Timesteps is T (100).
	Timesteps int `mapstructure:"timesteps" yaml:"timesteps"`
	// BetaSchedule is "cosine".
	BetaSchedule string `mapstructure:"beta_schedule" yaml:"beta_schedule"`
	// BetaS is the cosine schedule offset s (0.008).
	BetaS float64 `mapstructure:"beta_s" yaml:"beta_s"`
	// Modulation is "paper", "reference" or "none".
	Modulation string `mapstructure:"modulation" yaml:"modulation"`
}

// Train configures optimisation (METHOD §5).
type Train struct {
	// Stage is what `samdiffsr train` runs: "rrdb" (pretraining), "diffusion", or
	// "all" (both in turn, skipping a finished one).
	Stage string `mapstructure:"stage" yaml:"stage"`
	// BatchSize is the global batch (split across ranks).
	BatchSize int `mapstructure:"batch_size" yaml:"batch_size"`
	// Steps is the number of diffusion training steps.
	Steps int `mapstructure:"steps" yaml:"steps"`
	// LR is Adam's learning rate.
	LR float64 `mapstructure:"lr" yaml:"lr"`
	// LRSchedule is "cosine" (paper), "step" (reference) or "constant".
	LRSchedule string `mapstructure:"lr_schedule" yaml:"lr_schedule"`
	// LRStep and LRGamma define the step decay (halve every 200k in the reference).
	LRStep  int     `mapstructure:"lr_step" yaml:"lr_step"`
	LRGamma float64 `mapstructure:"lr_gamma" yaml:"lr_gamma"`
	// RRDBSteps, RRDBBatchSize and RRDBLR configure RRDB pretraining.
	RRDBSteps     int     `mapstructure:"rrdb_steps" yaml:"rrdb_steps"`
	RRDBBatchSize int     `mapstructure:"rrdb_batch_size" yaml:"rrdb_batch_size"`
	RRDBLR        float64 `mapstructure:"rrdb_lr" yaml:"rrdb_lr"`
	// ValEvery and CkptEvery are in steps (0 disables).
	ValEvery  int `mapstructure:"val_every" yaml:"val_every"`
	CkptEvery int `mapstructure:"ckpt_every" yaml:"ckpt_every"`
	// LogEvery is how often a metrics line is written, in steps.
	LogEvery int `mapstructure:"log_every" yaml:"log_every"`
	// Out is the run directory.
	Out string `mapstructure:"out" yaml:"out"`
	// KeepCheckpoints is how many checkpoints are kept on disk and in the registry
	// (the last K; 0 = all).
	KeepCheckpoints int `mapstructure:"keep_checkpoints" yaml:"keep_checkpoints"`
	// KeepEvery also keeps, in the registry, every checkpoint whose step is a
	// multiple of it (0 = none); KeepBest keeps the one with the best val_psnr_y.
	KeepEvery int  `mapstructure:"keep_every" yaml:"keep_every"`
	KeepBest  bool `mapstructure:"keep_best" yaml:"keep_best"`
}

// Eval configures metrics (METHOD §5).
type Eval struct {
	// CropBorder pixels are removed from each side before PSNR/SSIM (paper tables: 0).
	CropBorder int `mapstructure:"crop_border" yaml:"crop_border"`
}

// SR configures sampling (sr, eval and training's validation).
type SR struct {
	// Sampler is "ddpm" (the reference's ancestral sampler, diffusion.timesteps
	// steps) or "ddim" (sr.steps steps; not for diffusion.modulation paper).
	Sampler string `mapstructure:"sampler" yaml:"sampler"`
	// Steps is the number of DDIM steps (at least 1; more than the model's
	// diffusion.timesteps means all of them); DDPM ignores it.
	Steps int `mapstructure:"steps" yaml:"steps"`
	// Eta scales DDIM's noise: 0 deterministic, 1 with all steps is DDPM.
	Eta float64 `mapstructure:"eta" yaml:"eta"`
}

// Cluster configures the distributed parts.
type Cluster struct {
	NATS        NATS         `mapstructure:"nats" yaml:"nats"`
	Coordinator Coordinator  `mapstructure:"coordinator" yaml:"coordinator"`
	Worker      Worker       `mapstructure:"worker" yaml:"worker"`
	Train       ClusterTrain `mapstructure:"train" yaml:"train"`
	// MetricsAddr serves Prometheus /metrics when set (e.g. 127.0.0.1:9400).
	MetricsAddr string `mapstructure:"metrics_addr" yaml:"metrics_addr"`
}

// NATS configures the NATS connection or the embedded server.
type NATS struct {
	// URL of an external server or cluster; empty means an embedded server.
	URL string `mapstructure:"url" yaml:"url"`
	// Listen is the embedded server's client address; empty means in-process only.
	Listen string `mapstructure:"listen" yaml:"listen"`
	// StoreDir is the embedded server's JetStream directory.
	StoreDir string `mapstructure:"store_dir" yaml:"store_dir"`
	// User/Password or Token authenticate clients; NKeySeedFile holds an nkey seed.
	User         string `mapstructure:"user" yaml:"user"`
	Password     string `mapstructure:"password" yaml:"password"`
	Token        string `mapstructure:"token" yaml:"token"`
	NKeySeedFile string `mapstructure:"nkey_seed_file" yaml:"nkey_seed_file"`
	// NKeys are public user nkeys the embedded server accepts (besides NKeySeedFile's own).
	NKeys []string `mapstructure:"nkeys" yaml:"nkeys,flow"`
	// TLS files; all empty disables TLS.
	TLSCert string `mapstructure:"tls_cert" yaml:"tls_cert"`
	TLSKey  string `mapstructure:"tls_key" yaml:"tls_key"`
	TLSCA   string `mapstructure:"tls_ca" yaml:"tls_ca"`
	// Job names the job; stream, bucket and subject names derive from it.
	Job string `mapstructure:"job" yaml:"job"`
}

// Coordinator configures a raft voter.
type Coordinator struct {
	ID        string   `mapstructure:"id" yaml:"id"`
	RaftAddr  string   `mapstructure:"raft_addr" yaml:"raft_addr"`
	DataDir   string   `mapstructure:"data_dir" yaml:"data_dir"`
	Bootstrap bool     `mapstructure:"bootstrap" yaml:"bootstrap"`
	Join      []string `mapstructure:"join" yaml:"join,flow"`
	// LeaseTTL is how long a worker may hold a task without progress before it is re-queued.
	LeaseTTL time.Duration `mapstructure:"lease_ttl" yaml:"lease_ttl"`
	// MaxDeliver bounds redeliveries of a task before it is marked failed.
	MaxDeliver int `mapstructure:"max_deliver" yaml:"max_deliver"`
}

// Worker configures a worker process.
type Worker struct {
	// Roles the worker plays: "mask", "train".
	Roles []string `mapstructure:"roles" yaml:"roles,flow"`
	// Count is the number of local workers `samdiffsr run` starts.
	Count int `mapstructure:"count" yaml:"count"`
	// AckWait is how long a task may run between progress acks before redelivery.
	AckWait time.Duration `mapstructure:"ack_wait" yaml:"ack_wait"`
	// Heartbeat is the liveness interval.
	Heartbeat time.Duration `mapstructure:"heartbeat" yaml:"heartbeat"`
	// CollectiveTimeout bounds one all-reduce before the generation is abandoned.
	CollectiveTimeout time.Duration `mapstructure:"collective_timeout" yaml:"collective_timeout"`
}

// ClusterTrain configures distributed training: how generations are formed and how
// ranks reach each other.
type ClusterTrain struct {
	// MinWorkers is the smallest world a generation starts with; MaxWorkers the
	// largest (0 = no limit).
	MinWorkers int `mapstructure:"min_workers" yaml:"min_workers"`
	MaxWorkers int `mapstructure:"max_workers" yaml:"max_workers"`
	// AdmitEvery ends every generation at the next multiple of this many steps, where
	// waiting workers are admitted (0 = only when a generation ends for another reason).
	AdmitEvery int `mapstructure:"admit_every" yaml:"admit_every"`
	// RegroupGrace is how long the leader waits, after a generation ends, for the
	// members that have not reported back before it forms the next one without them.
	RegroupGrace time.Duration `mapstructure:"regroup_grace" yaml:"regroup_grace"`
	// WriterTimeout is how long the other ranks wait for rank 0 after a step on
	// which it validates or writes a checkpoint (instead of
	// cluster.worker.collective_timeout).
	WriterTimeout time.Duration `mapstructure:"writer_timeout" yaml:"writer_timeout"`
	// LostAfter ends a generation when a member sent no progress for this long.
	LostAfter time.Duration `mapstructure:"lost_after" yaml:"lost_after"`
	// RingAddr is where a training worker's collective listens (HOST:PORT; port 0
	// picks a free one). The host is never 0.0.0.0 unless set so on purpose.
	RingAddr string `mapstructure:"ring_addr" yaml:"ring_addr"`
}

// TrainHash is the SHA-256 (hex) of what determines the arithmetic of training —
// seed, model, diffusion, masks' SPE settings, data sizes and train — with paths,
// cadences of logs, validation and checkpoints, and the cluster section left out
// (they may differ between machines without changing a single weight). Ranks of
// one generation must agree on it.
func (c Config) TrainHash() string {
	t := c
	t.Cluster = Cluster{}
	t.Eval = Eval{}
	t.SR = SR{}
	t.Data.Root, t.Data.ValRoot, t.Data.CacheDir, t.Data.Synthetic = "", "", "", Synthetic{}
	t.Data.ValImages, t.Data.ValSize, t.Data.MaxPixels = 0, 0, 0
	t.Data.Packed, t.Data.Partitions, t.Data.CacheMaxBytes = "", 0, 0
	t.Masks.Dir, t.Masks.Workers = "", 0
	t.Train.Out, t.Train.LogEvery, t.Train.ValEvery, t.Train.CkptEvery = "", 0, 0, 0
	t.Train.KeepCheckpoints, t.Train.KeepEvery, t.Train.KeepBest = 0, 0, false
	t.Model.Backend = ""
	return t.Hash()
}

// Hash is the SHA-256 (hex) of the configuration's YAML form; it identifies a job's
// spec in the coordinator and in checkpoint metadata.
func (c Config) Hash() string {
	data, err := c.YAML()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
