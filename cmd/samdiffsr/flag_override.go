package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/samdiffsr/samdiffsr/configs"
)

// flagKey ties a command-line flag to the config key it overrides.
type flagKey struct{ flag, key string }

// validateOverrides validates cfg after flags were written into it, so a flag gets
// exactly the checks of the config key it overrides. Problems of keys set by a flag
// are usage errors (exit 2) naming the flag, the value and what is allowed.
func validateOverrides(cmd *cobra.Command, cfg configs.Config, overrides ...flagKey) error {
	var lines []string
	for _, p := range cfg.Validate() {
		for _, o := range overrides {
			if p.Key == o.key && cmd.Flags().Changed(o.flag) {
				lines = append(lines, fmt.Sprintf("%s: --%s %s (%s): %s", cmd.Name(), o.flag, p.Value, p.Key, p.Allowed))
			}
		}
	}
	if len(lines) > 0 {
		return &exitError{code: 2, msg: strings.Join(lines, "\n")}
	}
	return nil
}
