package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/checkpoints"
	"github.com/samdiffsr/samdiffsr/configs"
	"github.com/samdiffsr/samdiffsr/model"
)

// newCheckpointsImportCmd is `samdiffsr checkpoints import`: a reference PyTorch
// checkpoint in, a samdiffsr checkpoint out.
func newCheckpointsImportCmd(a *app) *cobra.Command {
	var (
		out         string
		weightsOnly bool
	)
	cmd := &cobra.Command{
		Use:   "import FILE --out RUN_DIR",
		Short: "Turn a PyTorch checkpoint of the reference code (SAM-DiffSR, SRDiff) into a samdiffsr checkpoint",
		Long: `import reads a checkpoint written by the reference code's torch.save — the legacy format
its trainer writes (_use_new_zipfile_serialization=False) or the zip format — holding
{'state_dict': {'model': ...}, 'optimizer_states': [...], 'global_step': N}, or a bare
state dict, with or without DataParallel's "module." prefix. An RRDB alone (the
reference's pretrained rrdb_ckpt, names without "rrdb.") becomes an rrdb-stage
checkpoint. Python is not needed, and the file's pickle is never executed: a file that
references anything but torch's tensor-rebuild functions is refused.

The model sizes (rrdb nf, nb, gc; unet dim, dim_mults) are read from the tensors. With
--config they must match the configuration (an error lists the differences); without
it, the defaults are used with the checkpoint's sizes. Every tensor must be a parameter
or schedule buffer of that model and every parameter must be present; the schedule
buffers must be the configured cosine schedule. The reference's Adam state (moments
and step) becomes samdiffsr's, so 'train --resume' continues the optimisation;
--weights-only leaves it out (Adam restarts).

The checkpoint is written to RUN_DIR/<stage>/checkpoints/step_<global_step>.`,
		Example: `  samdiffsr checkpoints import weights/model_ckpt_steps_400000.ckpt --out runs/from_reference --config configs/reference_x4.yaml
  samdiffsr sr --checkpoint runs/from_reference --in lr.png --out sr.png
  samdiffsr train --config configs/reference_x4.yaml --out runs/from_reference --stage diffusion --resume`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return &exitError{code: 2, msg: "checkpoints import: --out RUN_DIR is required"}
			}
			ti, err := checkpoints.ImportTorch(args[0])
			if err != nil {
				return err
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if cfg, err = importConfig(cfg, ti, len(a.configFiles) > 0); err != nil {
				return err
			}
			ck, err := importCheckpoint(cfg, ti, args[0], weightsOnly)
			if err != nil {
				return err
			}
			dir := filepath.Join(out, ti.Stage, checkpoints.SubDir, checkpoints.DirName(ck.Meta.Step))
			if _, err := os.Stat(dir); err == nil {
				return &exitError{code: 2, msg: fmt.Sprintf("checkpoints import: %s already exists; choose another --out", dir)}
			}
			if err := checkpoints.Save(dir, ck); err != nil {
				return err
			}
			printImport(cmd, ti, ck, args[0], dir, out, weightsOnly)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "run directory to write the checkpoint into (RUN_DIR/<stage>/checkpoints/step_N)")
	cmd.Flags().BoolVar(&weightsOnly, "weights-only", false, "import the weights only, not the optimizer state")
	return cmd
}

// importConfig checks the configuration against the checkpoint's model (explicit: the
// user gave --config) or takes the checkpoint's sizes into it.
func importConfig(cfg configs.Config, ti *checkpoints.TorchImport, explicit bool) (configs.Config, error) {
	s := ti.Sizes
	r, u := &cfg.Model.RRDB, &cfg.Model.UNet
	var diffs []string
	check := func(key string, have, want any) {
		if fmt.Sprint(have) != fmt.Sprint(want) {
			diffs = append(diffs, fmt.Sprintf("%s: config %v, checkpoint %v", key, have, want))
		}
	}
	T := cfg.Diffusion.Timesteps
	if b, ok := ti.Buffers["betas"]; ok && len(b.Shape) == 1 {
		if !explicit {
			T = b.Shape[0]
		}
		check("diffusion.timesteps", T, b.Shape[0])
	}
	if !explicit {
		r.NF, r.NB, r.GC = s.NF, s.NB, s.GC
		if ti.Stage == "diffusion" {
			u.Dim, u.DimMults = s.Dim, append([]int(nil), s.DimMults...)
		}
		cfg.Diffusion.Timesteps = T
	}
	check("model.rrdb.nf", r.NF, s.NF)
	check("model.rrdb.nb", r.NB, s.NB)
	check("model.rrdb.gc", r.GC, s.GC)
	if ti.Stage == "diffusion" {
		check("model.unet.dim", u.Dim, s.Dim)
		check("model.unet.dim_mults", u.DimMults, s.DimMults)
	}
	if len(diffs) > 0 {
		return cfg, &exitError{code: 2, msg: "checkpoints import: the checkpoint does not fit the configuration:\n  " + strings.Join(diffs, "\n  ") +
			"\n(pass the config the checkpoint was trained with, or none to take its sizes)"}
	}
	if ps := cfg.Validate(); len(ps) > 0 {
		lines := make([]string, len(ps))
		for i, p := range ps {
			lines[i] = p.String()
		}
		return cfg, &exitError{code: 2, msg: "checkpoints import: " + strings.Join(lines, "\n")}
	}
	return cfg, nil
}

// importCheckpoint loads the weights into the configured model (every name and
// shape checked), checks the schedule buffers and converts the Adam state.
func importCheckpoint(cfg configs.Config, ti *checkpoints.TorchImport, src string, weightsOnly bool) (checkpoints.Checkpoint, error) {
	var ck checkpoints.Checkpoint
	m, err := model.New(cfg, cfg.Seed)
	if err != nil {
		return ck, err
	}
	params := m.Params()
	trained := m.UNetParams()
	if ti.Stage == "rrdb" {
		params, trained = m.RRDBParams(), m.RRDBParams()
	}
	if err := checkImportNames(params, ti.Model, src); err != nil {
		return ck, err
	}
	ts := make([]model.Tensor, 0, len(ti.Model))
	for _, n := range ti.Order {
		t := ti.Model[n]
		ts = append(ts, model.Tensor{Name: n, Shape: t.Shape, Data: t.Data})
	}
	if err := m.LoadWeights(ts, ti.Stage == "rrdb"); err != nil {
		return ck, fmt.Errorf("checkpoints import %s: %w", src, err)
	}
	if err := checkScheduleBuffers(m.Schedule(), ti.Buffers, src); err != nil {
		return ck, err
	}
	step := ti.GlobalStep
	if step < 0 && ti.Adam != nil {
		step = ti.Adam.Step
	}
	step = max(step, 0)
	adam := model.NewAdam()
	ck = checkpoints.Checkpoint{
		Meta: checkpoints.Meta{Step: step, Stage: ti.Stage, ConfigHash: cfg.Hash(), Modulation: cfg.Diffusion.Modulation,
			Extra: map[string]string{"imported_from": src, "imported_format": "torch " + ti.Format, "imported_layout": ti.Layout}},
		Model:     map[string]checkpoints.Tensor{},
		Optimizer: map[string]checkpoints.Tensor{},
		OptimizerMeta: map[string]string{"adam_step": "0", "optimizer": "adam",
			"beta1": fmt.Sprint(adam.Beta1), "beta2": fmt.Sprint(adam.Beta2), "eps": fmt.Sprint(adam.Eps)},
	}
	if y, err := cfg.YAML(); err == nil {
		ck.Meta.Config = string(y)
	}
	for _, p := range params {
		ck.Model[p.Name] = checkpoints.Tensor{Shape: append([]int(nil), p.Shape...), Data: append([]float32(nil), p.Data...)}
	}
	if ti.Adam == nil || weightsOnly || ti.Adam.Step == 0 {
		return ck, nil
	}
	if err := checkAdamHyper(ti.Adam, adam, src); err != nil {
		return ck, err
	}
	var mts []model.Tensor
	for n, t := range ti.Adam.Moments {
		mts = append(mts, model.Tensor{Name: n, Shape: t.Shape, Data: t.Data})
	}
	if err := adam.Load(trained, ti.Adam.Step, mts); err != nil {
		return ck, fmt.Errorf("checkpoints import %s: optimizer state: %w (pass --weights-only to restart Adam)", src, err)
	}
	step, states := adam.State(trained)
	for _, t := range states {
		ck.Optimizer[t.Name] = checkpoints.Tensor{Shape: t.Shape, Data: t.Data}
	}
	ck.OptimizerMeta["adam_step"] = strconv.FormatInt(step, 10)
	return ck, nil
}

// checkImportNames lists the tensors that are not parameters of the model and the
// parameters the checkpoint lacks.
func checkImportNames(params []*model.Param, got map[string]checkpoints.Tensor, src string) error {
	want := map[string]bool{}
	var missing, unknown []string
	for _, p := range params {
		want[p.Name] = true
		if _, ok := got[p.Name]; !ok {
			missing = append(missing, p.Name)
		}
	}
	for n := range got {
		if !want[n] {
			unknown = append(unknown, n)
		}
	}
	if len(missing)+len(unknown) == 0 {
		return nil
	}
	msg := "checkpoints import " + src + ": the tensors do not match the model's parameters"
	for _, l := range []struct {
		what  string
		names []string
	}{{"not parameters of the model", unknown}, {"missing", missing}} {
		if len(l.names) == 0 {
			continue
		}
		sort.Strings(l.names)
		shown := l.names
		if len(shown) > 10 {
			shown = shown[:10]
		}
		msg += fmt.Sprintf("\n  %d %s: %s", len(l.names), l.what, strings.Join(shown, ", "))
		if len(l.names) > len(shown) {
			msg += fmt.Sprintf(", … (%d more)", len(l.names)-len(shown))
		}
	}
	return &exitError{code: 1, msg: msg}
}

// checkScheduleBuffers compares the checkpoint's betas with the model's schedule.
func checkScheduleBuffers(s *model.Schedule, bufs map[string]checkpoints.Tensor, src string) error {
	b, ok := bufs["betas"]
	if !ok {
		return nil
	}
	if len(b.Data) != s.T {
		return fmt.Errorf("checkpoints import %s: betas has %d steps, the schedule %d", src, len(b.Data), s.T)
	}
	for t, v := range b.Data {
		want := float32(s.Betas[t])
		if math.Abs(float64(v-want)) > 1e-6+1e-5*math.Abs(float64(want)) {
			return &exitError{code: 1, msg: fmt.Sprintf("checkpoints import %s: betas[%d] is %g, the configured cosine schedule has %g; set diffusion.beta_schedule/beta_s to the checkpoint's", src, t, v, want)}
		}
	}
	return nil
}

// checkAdamHyper refuses an optimizer state samdiffsr's Adam cannot continue.
func checkAdamHyper(t *checkpoints.TorchAdam, a *model.Adam, src string) error {
	var bad []string
	if t.Beta1 != a.Beta1 || t.Beta2 != a.Beta2 {
		bad = append(bad, fmt.Sprintf("betas (%g, %g), samdiffsr uses (%g, %g)", t.Beta1, t.Beta2, a.Beta1, a.Beta2))
	}
	if t.Eps != a.Eps {
		bad = append(bad, fmt.Sprintf("eps %g, samdiffsr uses %g", t.Eps, a.Eps))
	}
	if t.WeightDecay != 0 {
		bad = append(bad, fmt.Sprintf("weight_decay %g, samdiffsr uses none", t.WeightDecay))
	}
	if t.AMSGrad {
		bad = append(bad, "amsgrad, samdiffsr uses plain Adam")
	}
	if len(bad) == 0 {
		return nil
	}
	return &exitError{code: 1, msg: fmt.Sprintf("checkpoints import %s: the optimizer state cannot be continued: %s; pass --weights-only to import the weights alone",
		src, strings.Join(bad, "; "))}
}

func printImport(cmd *cobra.Command, ti *checkpoints.TorchImport, ck checkpoints.Checkpoint, src, dir, run string, weightsOnly bool) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "imported %s (torch %s format, %s", src, ti.Format, ti.Layout)
	if ti.StrippedPrefix != "" {
		fmt.Fprintf(w, ", %q prefix removed", ti.StrippedPrefix)
	}
	fmt.Fprintf(w, ")\n  model       RRDB nf %d nb %d gc %d", ti.Sizes.NF, ti.Sizes.NB, ti.Sizes.GC)
	if ti.Stage == "diffusion" {
		fmt.Fprintf(w, ", U-Net dim %d dim_mults %v", ti.Sizes.Dim, ti.Sizes.DimMults)
	}
	fmt.Fprintf(w, ": %d tensors, %d parameters (stage %s)\n", len(ck.Model), checkpoints.ParamCount(ck.Model), ti.Stage)
	switch {
	case ti.Adam == nil:
		fmt.Fprintf(w, "  optimizer   none in the file (Adam starts afresh)\n")
	case weightsOnly:
		fmt.Fprintf(w, "  optimizer   left out (--weights-only)\n")
	default:
		fmt.Fprintf(w, "  optimizer   Adam step %s, moments of %d tensors (the file's lr was %g; train.lr applies from now on)\n",
			ck.OptimizerMeta["adam_step"], len(ck.Optimizer)/2, ti.Adam.LR)
		if n := droppedMoments(ti.Adam, ck.Optimizer); n > 0 {
			fmt.Fprintf(w, "              the file's Adam moments of %d other tensors are not kept (the diffusion stage trains the U-Net; the RRDB stays frozen)\n", n)
		}
	}
	fmt.Fprintf(w, "  step        %d\nwrote %s\n", ck.Meta.Step, dir)
	if ti.Stage == "diffusion" {
		fmt.Fprintf(w, "  super-resolve: samdiffsr sr --checkpoint %s --in LR --out SR\n", run)
		fmt.Fprintf(w, "  fine-tune:     samdiffsr train --out %s --stage diffusion --resume (with the same --config)\n", run)
	} else {
		fmt.Fprintf(w, "  train the diffusion stage on it: samdiffsr train --out %s --stage diffusion (with the same --config)\n", run)
	}
}

// droppedMoments counts the parameters whose Adam moments the file has and the
// imported optimizer state does not keep.
func droppedMoments(a *checkpoints.TorchAdam, kept map[string]checkpoints.Tensor) int {
	n := 0
	for name := range a.Moments {
		if _, ok := kept[name]; !ok && strings.HasSuffix(name, ".exp_avg") {
			n++
		}
	}
	return n
}
