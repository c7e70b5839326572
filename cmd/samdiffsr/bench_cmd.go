package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/worker"
)

func newBenchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "bench",
		Short:   "Measurements that go into BENCHMARKS.md",
		Example: `  samdiffsr bench method --config configs/method_bench.yaml --photos ../shared/data/photos --out build/bench-method`,
	}
	cmd.AddCommand(newBenchMethodCmd(a))
	return cmd
}

func newBenchMethodCmd(a *app) *cobra.Command {
	var photos, out, budgets, mods string
	var trainPhotos, trainCrops, valCrops, cropSize, ddimSteps int
	cmd := &cobra.Command{
		Use:   "method",
		Short: "Ablation: modulations none, reference and paper at equal budgets, sampled with DDPM and DDIM",
		Long: `bench method trains, from one seed, one configuration (--config; the model and
training settings) and one data set, the diffusion stage of every modulation to every
budget (one RRDB for all, checkpoints at each budget), then evaluates each checkpoint on
held-out crops with DDPM (all diffusion.timesteps steps) and DDIM (--ddim-steps, η 0;
measured for paper too, although it is unsound there) and prints one table row each:
PSNR-Y/SSIM-Y, bicubic, the training loss by timestep band over the last fifth of the
steps, the denoiser's x̂0 PSNR-Y at fixed t and the sampling time. Data: random crops,
cut at run time into OUT/data, of the first --train-photos photos of --photos (sorted by
name) for training, of the others for validation (data.val_size pixels). Rows also go to
OUT/rows.json. An OUT with finished runs in it is reused: delete it to start over.`,
		Example: `  samdiffsr bench method --config configs/method_bench.yaml --photos ../shared/data/photos --out build/bench-method --budgets 300,900`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if photos == "" || out == "" {
				return &exitError{code: 2, msg: "bench method: --photos and --out are required"}
			}
			bs, err := parseInts(budgets)
			if err != nil || len(bs) == 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("bench method: --budgets %q: want positive step counts separated by commas, e.g. 300,900", budgets)}
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if ddimSteps < 1 || ddimSteps > cfg.Diffusion.Timesteps {
				return &exitError{code: 2, msg: fmt.Sprintf("bench method: --ddim-steps %d: want 1..%d (diffusion.timesteps)", ddimSteps, cfg.Diffusion.Timesteps)}
			}
			w := cmd.OutOrStdout()
			fmt.Fprintln(w, methodHeader)
			rows, err := worker.MethodBench(cmd.Context(), worker.MethodBenchOptions{Config: cfg, Photos: photos, TrainPhotos: trainPhotos,
				TrainCrops: trainCrops, ValCrops: valCrops, CropSize: cropSize, Out: out, Budgets: bs, Modulations: strings.Split(mods, ","),
				DDIMSteps: ddimSteps, Log: a.log, Progress: a.stderr, OnRow: func(r worker.MethodBenchRow) { printMethodRow(w, r) }})
			if len(rows) > 0 {
				if b, jerr := json.MarshalIndent(rows, "", "  "); jerr == nil {
					if werr := fsutil.WriteFileAtomic(filepath.Join(out, "rows.json"), b, 0o644); werr != nil {
						a.log.Warn("rows.json not written", "err", werr)
					}
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&photos, "photos", "", "folder of photographs (PNG/JPEG) to cut the training and validation crops from")
	f.StringVar(&out, "out", "", "work folder (crops, masks, runs, rows.json)")
	f.StringVar(&budgets, "budgets", "300,900", "diffusion step budgets, comma-separated")
	f.StringVar(&mods, "modulations", "none,reference,paper", "modulations to compare, comma-separated")
	f.IntVar(&trainPhotos, "train-photos", 6, "how many photos (sorted by name) give training crops; the rest give validation crops")
	f.IntVar(&trainCrops, "train-crops", 48, "training crops")
	f.IntVar(&valCrops, "val-crops", 8, "validation crops (data.val_size pixels)")
	f.IntVar(&cropSize, "crop", 128, "training crop side in pixels")
	f.IntVar(&ddimSteps, "ddim-steps", 10, "DDIM steps")
	return cmd
}

const methodHeader = "| modulation | steps | sampler | PSNR-Y | SSIM-Y | bicubic PSNR-Y / SSIM-Y | loss by t (last fifth) | x̂0 PSNR-Y by t | sampling s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"

func printMethodRow(w io.Writer, r worker.MethodBenchRow) {
	var bands, x0 []string
	for _, b := range r.LossByT {
		bands = append(bands, fmt.Sprintf("%d-%d: %.3f", b.From, b.To, b.Loss))
	}
	for _, q := range r.X0 {
		x0 = append(x0, fmt.Sprintf("%d: %.1f", q.T, q.PSNRY))
	}
	s := r.Sampler
	if !r.Sound {
		s += " (unsound)"
	}
	fmt.Fprintf(w, "| %s | %d | %s | %.2f | %.4f | %.2f / %.4f | %s | %s | %.1f |\n", r.Modulation, r.Steps, s, r.PSNRY, r.SSIMY,
		r.BicubicPSNRY, r.BicubicSSIMY, strings.Join(bands, ", "), strings.Join(x0, ", "), r.SampleSeconds)
	if f, ok := w.(*os.File); ok {
		f.Sync()
	}
}

// parseInts parses "300,900" into positive integers.
func parseInts(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad count %q", p)
		}
		out = append(out, v)
	}
	return out, nil
}
