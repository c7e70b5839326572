package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/model"
)

func newModelCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Inspect the networks (parameter counts, compute backend)",
		Example: `  samdiffsr model summary --config configs/sam_diffsr_x4.yaml
  samdiffsr model summary --config configs/quickstart.yaml`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "summary",
		Short:   "Print the parameter count of every module and in total",
		Example: `  samdiffsr model summary --config configs/sam_diffsr_x4.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			a.log.Info("compute backend", "blas", model.BLASName())
			if adv := model.BLASAdvice(); adv != "" {
				a.log.Warn(adv)
			}
			m, err := model.New(cfg, cfg.Seed)
			if err != nil {
				return fmt.Errorf("model summary: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%-30s %12s\n", "module", "parameters")
			total := 0
			for _, l := range m.Summary() {
				name := "  " + l.Module
				if l.Module == "rrdb" || l.Module == "denoise_fn" {
					name = l.Module
					total += l.Params
				}
				fmt.Fprintf(out, "%-30s %12d\n", name, l.Params)
			}
			fmt.Fprintf(out, "%-30s %12d\n", "total", total)
			return nil
		},
	})
	return cmd
}
