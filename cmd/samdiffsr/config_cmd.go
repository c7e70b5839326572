package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Validate or print the effective configuration",
		Example: `  samdiffsr config validate --config configs/sam_diffsr_x4.yaml
  SAMDIFFSR_TRAIN_BATCH_SIZE=8 samdiffsr config print --config configs/quickstart.yaml`,
	}
	validate := &cobra.Command{
		Use:   "validate",
		Short: "Check a configuration: exit 0, or exit 2 with one line per problem",
		Example: `  samdiffsr config validate --config configs/reference_x4.yaml
  samdiffsr config validate --config configs/sam_diffsr_x4.yaml --config my-overrides.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.loadConfig(); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "config ok")
			return nil
		},
	}
	print := &cobra.Command{
		Use:     "print",
		Short:   "Print the effective configuration (defaults + files + SAMDIFFSR_* env) as YAML",
		Example: `  samdiffsr config print --config configs/quickstart.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			data, err := cfg.YAML()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(data)
			return err
		},
	}
	cmd.AddCommand(validate, print)
	return cmd
}
