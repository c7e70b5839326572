package checkpoints

import (
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/samdiffsr/samdiffsr/checkpoints/torchfile"
)

// ScheduleBuffers are the diffusion schedule buffers the reference's
// GaussianDiffusion registers; its state dict holds them beside the parameters.
var ScheduleBuffers = []string{"betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
	"sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
	"sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
	"posterior_mean_coef1", "posterior_mean_coef2"}

// ReferenceSizes are the model sizes a reference checkpoint's tensors imply.
type ReferenceSizes struct {
	// NF, NB and GC are the RRDB's feature count, block count and growth channels.
	NF, NB, GC int
	// Dim and DimMults are the U-Net's; zero for an RRDB-only checkpoint.
	Dim      int
	DimMults []int
}

// TorchAdam is the state of torch.optim.Adam from a reference checkpoint, in
// samdiffsr's terms.
type TorchAdam struct {
	// Step is the Adam step count (the same for every parameter that has state).
	Step int64
	// Beta1, Beta2, Eps, WeightDecay, AMSGrad and LR are the first param group's.
	Beta1, Beta2, Eps, WeightDecay, LR float64
	AMSGrad                            bool
	// Moments holds "<param>.exp_avg" and "<param>.exp_avg_sq" for every parameter
	// that has state (those that never had a gradient have none).
	Moments map[string]Tensor
}

// TorchImport is a PyTorch checkpoint of the reference code (lose4578/SAM-DiffSR,
// LeiaLi/SRDiff) read into samdiffsr's names.
type TorchImport struct {
	// Format is torchfile.FormatLegacy or torchfile.FormatZip.
	Format string
	// Layout says where the state dict was: "state_dict.model" (the reference's
	// checkpoints), "state_dict" or "bare".
	Layout string
	// StrippedPrefix is "module." when the names carried DataParallel's prefix.
	StrippedPrefix string
	// Stage is "diffusion" (RRDB and U-Net) or "rrdb" (an RRDB alone, as the
	// reference's pretrained rrdb_ckpt, whose names lack the "rrdb." prefix).
	Stage string
	// Model maps samdiffsr parameter names to the weights; Order lists them in the
	// file's order (the optimizer's parameter order).
	Model map[string]Tensor
	Order []string
	// Buffers holds the schedule buffers found (see ScheduleBuffers).
	Buffers map[string]Tensor
	// Sizes are the model sizes the tensors imply.
	Sizes ReferenceSizes
	// GlobalStep is the checkpoint's global_step (-1 when it has none).
	GlobalStep int64
	// Adam is the optimizer state; nil when the file has none.
	Adam *TorchAdam
}

// ImportTorch reads a reference PyTorch checkpoint (either torch.save format):
// {'state_dict': {'model': ...}, 'optimizer_states': [...], 'global_step': N} as
// the reference writes it, {'state_dict': ...}, or a bare state dict, with or
// without DataParallel's "module." prefix. It infers the model sizes and converts
// the Adam state. Which names the model has is checked by the caller (the model
// knows); errors here name the file and the key.
func ImportTorch(path string) (*TorchImport, error) {
	f, err := torchfile.Load(path, torchfile.Options{})
	if err != nil {
		return nil, fmt.Errorf("checkpoints: import: %w", err)
	}
	ti, err := fromTorch(f)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: import %s: %w", path, err)
	}
	return ti, nil
}

func fromTorch(f *torchfile.File) (*TorchImport, error) {
	root, ok := f.Root.(*torchfile.Dict)
	if !ok {
		return nil, fmt.Errorf("the file holds a %T, not a dict", f.Root)
	}
	sd, layout, err := findStateDict(root)
	if err != nil {
		return nil, err
	}
	ti := &TorchImport{Format: f.Format, Layout: layout, Model: map[string]Tensor{}, Buffers: map[string]Tensor{}, GlobalStep: -1}
	names, tensors, err := stateTensors(sd)
	if err != nil {
		return nil, err
	}
	names, ti.StrippedPrefix = stripPrefix(names, "module.")
	ti.Stage = "diffusion"
	if !hasPrefix(names, "denoise_fn.") {
		ti.Stage = "rrdb"
		if !hasPrefix(names, "rrdb.") {
			for i := range names {
				names[i] = "rrdb." + names[i]
			}
		}
	}
	isBuffer := map[string]bool{}
	for _, b := range ScheduleBuffers {
		isBuffer[b] = true
	}
	for i, n := range names {
		if _, dup := ti.Model[n]; dup {
			return nil, fmt.Errorf("tensor %q appears twice", n)
		}
		t := Tensor{Shape: tensors[i].Shape, Data: tensors[i].Data}
		if isBuffer[n] {
			ti.Buffers[n] = t
			continue
		}
		ti.Model[n] = t
		ti.Order = append(ti.Order, n)
	}
	if ti.Sizes, err = inferSizes(ti.Model, ti.Stage == "diffusion"); err != nil {
		return nil, err
	}
	if v, ok := root.Get("global_step"); ok {
		n, err := pyInt(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("global_step %v is not a step count", v)
		}
		ti.GlobalStep = n
	}
	if v, ok := root.Get("optimizer_states"); ok {
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return nil, fmt.Errorf("optimizer_states is %T, want a list of one optimizer state", v)
		}
		if len(list) > 1 {
			return nil, fmt.Errorf("optimizer_states has %d optimizers; samdiffsr trains with one Adam", len(list))
		}
		if ti.Adam, err = adamState(list[0], ti); err != nil {
			return nil, fmt.Errorf("optimizer_states[0]: %w", err)
		}
	}
	return ti, nil
}

// findStateDict locates the model's state dict in a checkpoint.
func findStateDict(root *torchfile.Dict) (*torchfile.Dict, string, error) {
	if v, ok := root.Get("state_dict"); ok {
		sd, ok := v.(*torchfile.Dict)
		if !ok {
			return nil, "", fmt.Errorf("state_dict is %T, want a dict", v)
		}
		if m, ok := sd.Get("model"); ok {
			if md, ok := m.(*torchfile.Dict); ok {
				return md, "state_dict.model", nil
			}
		}
		return sd, "state_dict", nil
	}
	if allTensors(root) {
		return root, "bare", nil
	}
	var keys []string
	for _, k := range root.Keys {
		keys = append(keys, fmt.Sprint(k))
	}
	return nil, "", fmt.Errorf("no state dict: want {'state_dict': {'model': {...}}} as the reference saves, or a bare state dict; the file's keys are %s",
		strings.Join(keys, ", "))
}

func allTensors(d *torchfile.Dict) bool {
	for _, v := range d.Values {
		if _, ok := v.(*torchfile.Tensor); !ok {
			return false
		}
	}
	return len(d.Values) > 0
}

func stateTensors(sd *torchfile.Dict) ([]string, []*torchfile.Tensor, error) {
	if len(sd.Keys) == 0 {
		return nil, nil, errors.New("the state dict is empty")
	}
	names := make([]string, len(sd.Keys))
	ts := make([]*torchfile.Tensor, len(sd.Keys))
	for i, k := range sd.Keys {
		n, ok := k.(string)
		if !ok {
			return nil, nil, fmt.Errorf("state dict key %v is not a string", k)
		}
		t, ok := sd.Values[i].(*torchfile.Tensor)
		if !ok {
			return nil, nil, fmt.Errorf("state dict entry %q is %T, not a tensor", n, sd.Values[i])
		}
		names[i], ts[i] = n, t
	}
	return names, ts, nil
}

// stripPrefix removes prefix from every name when all have it.
func stripPrefix(names []string, prefix string) ([]string, string) {
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) {
			return names, ""
		}
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.TrimPrefix(n, prefix)
	}
	return out, prefix
}

func hasPrefix(names []string, prefix string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

var (
	rrdbBlock = regexp.MustCompile(`^rrdb\.RRDB_trunk\.([0-9]+)\.`)
	downLevel = regexp.MustCompile(`^denoise_fn\.downs\.([0-9]+)\.`)
)

// inferSizes reads the model sizes from the shapes of a few tensors and the number
// of blocks and levels.
func inferSizes(m map[string]Tensor, unet bool) (ReferenceSizes, error) {
	var s ReferenceSizes
	dim := func(name string, axis, rank int) (int, error) {
		t, ok := m[name]
		if !ok {
			return 0, fmt.Errorf("the state dict lacks %q (not a SAM-DiffSR/SRDiff checkpoint?)", name)
		}
		if len(t.Shape) != rank {
			return 0, fmt.Errorf("%q has shape %v, want %d dimensions", name, t.Shape, rank)
		}
		return t.Shape[axis], nil
	}
	var err error
	if s.NF, err = dim("rrdb.conv_first.weight", 0, 4); err != nil {
		return s, err
	}
	if s.GC, err = dim("rrdb.RRDB_trunk.0.RDB1.conv1.weight", 0, 4); err != nil {
		return s, err
	}
	if s.NB, err = countIndices(m, rrdbBlock, "rrdb.RRDB_trunk"); err != nil {
		return s, err
	}
	if !unet {
		return s, nil
	}
	if s.Dim, err = dim("denoise_fn.mlp.0.weight", 1, 2); err != nil {
		return s, err
	}
	levels, err := countIndices(m, downLevel, "denoise_fn.downs")
	if err != nil {
		return s, err
	}
	for i := 0; i < levels; i++ {
		name := fmt.Sprintf("denoise_fn.downs.%d.0.block1.block.1.weight", i)
		out, err := dim(name, 0, 4)
		if err != nil {
			return s, err
		}
		if s.Dim <= 0 || out%s.Dim != 0 {
			return s, fmt.Errorf("%q has %d output channels, not a multiple of the U-Net width %d", name, out, s.Dim)
		}
		s.DimMults = append(s.DimMults, out/s.Dim)
	}
	return s, nil
}

// countIndices counts the blocks prefix.0, prefix.1, … and checks there are no gaps.
func countIndices(m map[string]Tensor, re *regexp.Regexp, prefix string) (int, error) {
	seen := map[int]bool{}
	for n := range m {
		if g := re.FindStringSubmatch(n); g != nil {
			i, err := strconv.Atoi(g[1])
			if err != nil || i > 1<<20 {
				return 0, fmt.Errorf("tensor %q: bad index", n)
			}
			seen[i] = true
		}
	}
	for i := 0; i < len(seen); i++ {
		if !seen[i] {
			var idx []int
			for k := range seen {
				idx = append(idx, k)
			}
			sort.Ints(idx)
			return 0, fmt.Errorf("%s has blocks %v: block %d is missing", prefix, idx, i)
		}
	}
	if len(seen) == 0 {
		return 0, fmt.Errorf("the state dict has no %s.* tensors", prefix)
	}
	return len(seen), nil
}

// adamState converts torch.optim.Adam's state_dict(): {'state': {index: {'step',
// 'exp_avg', 'exp_avg_sq'}}, 'param_groups': [{'params': [indices], 'betas', 'eps',
// ...}]}. Indices count the optimizer's parameters in order: the model's parameters
// in state-dict order (all of them, as the reference passes them, or only the
// U-Net's).
func adamState(v any, ti *TorchImport) (*TorchAdam, error) {
	d, ok := v.(*torchfile.Dict)
	if !ok {
		return nil, fmt.Errorf("is %T, want an optimizer state_dict", v)
	}
	groupsV, _ := d.Get("param_groups")
	groups, ok := groupsV.([]any)
	if !ok || len(groups) == 0 {
		return nil, errors.New("no param_groups (not a torch.optim state_dict)")
	}
	a := &TorchAdam{Moments: map[string]Tensor{}}
	total := 0
	for gi, gv := range groups {
		g, ok := gv.(*torchfile.Dict)
		if !ok {
			return nil, fmt.Errorf("param_groups[%d] is %T", gi, gv)
		}
		pv, _ := g.Get("params")
		ps, ok := pv.([]any)
		if !ok {
			return nil, fmt.Errorf("param_groups[%d] has no params list", gi)
		}
		total += len(ps)
		if gi == 0 {
			if err := a.hyper(g); err != nil {
				return nil, fmt.Errorf("param_groups[0]: %w", err)
			}
		}
	}
	order := ti.Order
	if total != len(order) {
		var unet []string
		for _, n := range order {
			if strings.HasPrefix(n, "denoise_fn.") {
				unet = append(unet, n)
			}
		}
		if total != len(unet) {
			return nil, fmt.Errorf("the optimizer has %d parameters; the model has %d (%d in the U-Net)", total, len(order), len(unet))
		}
		order = unet
	}
	stV, _ := d.Get("state")
	st, ok := stV.(*torchfile.Dict)
	if !ok {
		return nil, errors.New("no state dict of per-parameter state")
	}
	a.Step = -1
	for i, k := range st.Keys {
		idx, err := pyInt(k)
		if err != nil || idx < 0 || idx >= int64(len(order)) {
			return nil, fmt.Errorf("state key %v is not a parameter index below %d", k, len(order))
		}
		name := order[idx]
		ps, ok := st.Values[i].(*torchfile.Dict)
		if !ok {
			return nil, fmt.Errorf("state of %s is %T", name, st.Values[i])
		}
		if _, ok := ps.Get("max_exp_avg_sq"); ok {
			return nil, fmt.Errorf("state of %s has max_exp_avg_sq (AMSGrad); samdiffsr's Adam is plain Adam", name)
		}
		sv, _ := ps.Get("step")
		step, err := pyInt(sv)
		if err != nil {
			return nil, fmt.Errorf("step of %s: %w", name, err)
		}
		if a.Step >= 0 && step != a.Step {
			return nil, fmt.Errorf("parameters are at different Adam steps (%d and %d at %s); samdiffsr's Adam keeps one step count", a.Step, step, name)
		}
		a.Step = step
		want := ti.Model[name].Shape
		for _, m := range []string{"exp_avg", "exp_avg_sq"} {
			mv, _ := ps.Get(m)
			t, ok := mv.(*torchfile.Tensor)
			if !ok {
				return nil, fmt.Errorf("state of %s has no %s tensor", name, m)
			}
			if !slices.Equal(t.Shape, want) {
				return nil, fmt.Errorf("%s of %s has shape %v, the parameter %v (the optimizer's parameter order does not match the state dict's)", m, name, t.Shape, want)
			}
			a.Moments[name+"."+m] = Tensor{Shape: t.Shape, Data: t.Data}
		}
	}
	if a.Step < 0 {
		a.Step = 0
	}
	return a, nil
}

// hyper reads a param group's Adam hyper-parameters.
func (a *TorchAdam) hyper(g *torchfile.Dict) error {
	num := func(key string, dst *float64) error {
		v, ok := g.Get(key)
		if !ok {
			return fmt.Errorf("no %s", key)
		}
		f, err := pyFloat(v)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		*dst = f
		return nil
	}
	bv, _ := g.Get("betas")
	betas, ok := bv.([]any)
	if !ok || len(betas) != 2 {
		return fmt.Errorf("betas %v is not a pair (not Adam?)", bv)
	}
	var err error
	if a.Beta1, err = pyFloat(betas[0]); err != nil {
		return fmt.Errorf("betas: %w", err)
	}
	if a.Beta2, err = pyFloat(betas[1]); err != nil {
		return fmt.Errorf("betas: %w", err)
	}
	if err := num("eps", &a.Eps); err != nil {
		return err
	}
	if err := num("lr", &a.LR); err != nil {
		return err
	}
	a.WeightDecay = 0
	if _, ok := g.Get("weight_decay"); ok {
		if err := num("weight_decay", &a.WeightDecay); err != nil {
			return err
		}
	}
	if v, ok := g.Get("amsgrad"); ok {
		a.AMSGrad, _ = v.(bool)
	}
	return nil
}

// pyInt reads a Python int (or a one-element tensor holding an integer, as torch
// ≥ 1.12 stores Adam's step).
func pyInt(v any) (int64, error) {
	switch x := v.(type) {
	case int:
		return int64(x), nil
	case *big.Int:
		if x.IsInt64() {
			return x.Int64(), nil
		}
	case *torchfile.Tensor:
		if len(x.Data) == 1 && x.Data[0] == float32(int64(x.Data[0])) && x.Data[0] >= 0 && x.Data[0] < 1<<24 {
			return int64(x.Data[0]), nil
		}
	case float64:
		if x == float64(int64(x)) {
			return int64(x), nil
		}
	}
	return 0, fmt.Errorf("%v is not an integer", v)
}

func pyFloat(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case int:
		return float64(x), nil
	}
	return 0, fmt.Errorf("%v is not a number", v)
}
