package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/configs"
)

// app is the state shared by every subcommand: global flags and the logger.
type app struct {
	configFiles []string
	logLevel    string
	stdout      io.Writer
	stderr      io.Writer
	log         *slog.Logger
}

// loadConfig returns the effective configuration (defaults + --config files + SAMDIFFSR_* env).
func (a *app) loadConfig() (configs.Config, error) {
	cfg, err := configs.LoadFiles(a.configFiles...)
	if err != nil {
		if pe, ok := err.(*configs.ProblemsError); ok {
			lines := make([]string, len(pe.Problems))
			for i, p := range pe.Problems {
				lines[i] = p.String()
			}
			return cfg, &exitError{code: 2, msg: strings.Join(lines, "\n")}
		}
		return cfg, err
	}
	return cfg, nil
}

// buildVersion describes this binary from its build information: module version, VCS
// commit (+dirty when built from modified files) and Go version.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown build)"
	}
	rev, dirty := "unknown", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return fmt.Sprintf("%s (commit %s%s, %s)", bi.Main.Version, rev, dirty, bi.GoVersion)
}

func newRootCmd() *cobra.Command {
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	root := &cobra.Command{
		Use:   "samdiffsr",
		Short: "Train and run SAM-DiffSR: structure-modulated diffusion for x4 super-resolution",
		Long: `samdiffsr trains SAM-DiffSR, a diffusion model for x4 image super-resolution whose
forward noise is modulated by segmentation masks, from one machine to a cluster.
One binary plays every role.`,
		Example: `  samdiffsr config validate --config configs/quickstart.yaml
  samdiffsr data synth --out demo/data --n 8`,
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
				return &exitError{code: 2, msg: fmt.Sprintf("--log-level: %q is not a level; use debug, info, warn or error", a.logLevel)}
			}
			// Logs and progress go where the command's stderr is (tests capture it).
			a.stderr = cmd.ErrOrStderr()
			a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: lvl}))
			return nil
		},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	defCfg := os.Getenv("SAMDIFFSR_CONFIG")
	var defFiles []string
	if defCfg != "" {
		defFiles = strings.Split(defCfg, ",")
	}
	defLevel := os.Getenv("SAMDIFFSR_LOG_LEVEL")
	if defLevel == "" {
		defLevel = "info"
	}
	root.PersistentFlags().StringArrayVar(&a.configFiles, "config", defFiles, "YAML config file; repeat to layer (later files win); env SAMDIFFSR_CONFIG")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", defLevel, "log level: debug, info, warn, error; env SAMDIFFSR_LOG_LEVEL")

	root.AddCommand(
		newConfigCmd(a),
		newMasksCmd(a),
		newModelCmd(a),
		newDataCmd(a),
		newCoordinatorCmd(a),
		newWorkerCmd(a),
		newStatusCmd(a),
		newRunCmd(a),
		newEvalCmd(a),
		newTrainCmd(a),
		newSRCmd(a),
		newCheckpointsCmd(a),
		newBenchCmd(a),
	)
	return root
}
