package checkpoints

import (
	"fmt"
	"log/slog"
	"regexp"
)

// legacyUpsample matches the U-Net Upsample names samdiffsr wrote before it followed
// the reference exactly: "denoise_fn.ups.J.2.conv.weight" / ".bias" (and the Adam
// moments "<name>.exp_avg" / ".exp_avg_sq"). The reference wraps the transposed
// convolution in nn.Sequential, so its names are "denoise_fn.ups.J.2.conv.0.weight".
var legacyUpsample = regexp.MustCompile(`^(denoise_fn\.ups\.[0-9]+\.2\.conv)\.(weight|bias)((?:\.exp_avg|\.exp_avg_sq)?)$`)

// LegacyName returns the current name of a tensor name written by an older samdiffsr
// (the Upsample transposed convolution "denoise_fn.ups.J.2.conv.weight" is now
// "denoise_fn.ups.J.2.conv.0.weight", as in the reference) and whether it was one.
func LegacyName(name string) (string, bool) {
	m := legacyUpsample.FindStringSubmatch(name)
	if m == nil {
		return name, false
	}
	return m[1] + ".0." + m[2] + m[3], true
}

// upgradeLegacyNames renames, in place, the old Upsample names of ts (see LegacyName)
// and returns how many it renamed. A tensor present under both its old and its new
// name is an error naming both.
func upgradeLegacyNames(path string, ts map[string]Tensor) (int, error) {
	var old []string
	for name := range ts {
		if _, ok := LegacyName(name); ok {
			old = append(old, name)
		}
	}
	for _, name := range old {
		nn, _ := LegacyName(name)
		if _, dup := ts[nn]; dup {
			return 0, fmt.Errorf("checkpoints: %s holds both %q and its current name %q; remove one of them", path, name, nn)
		}
		ts[nn] = ts[name]
		delete(ts, name)
	}
	return len(old), nil
}

// upgradeLegacy converts a checkpoint written with the old Upsample names (model and
// optimizer) and logs one notice line saying so.
func upgradeLegacy(c *Checkpoint) error {
	n, err := upgradeLegacyNames(c.Dir, c.Model)
	if err != nil {
		return err
	}
	m, err := upgradeLegacyNames(c.Dir, c.Optimizer)
	if err != nil {
		return err
	}
	if n+m > 0 {
		slog.Warn("checkpoint uses the old U-Net Upsample names denoise_fn.ups.J.2.conv.{weight,bias}; "+
			"converted on load to the reference's denoise_fn.ups.J.2.conv.0.{weight,bias} (checkpoints written from now on use the new names)",
			"checkpoint", c.Dir, "tensors", n, "optimizer_tensors", m)
	}
	return nil
}
