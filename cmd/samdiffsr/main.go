// Command samdiffsr trains SAM-DiffSR (structure-modulated diffusion for x4 image
// super-resolution) and plays every role of the system: run, coordinator, worker,
// masks, train, sr, eval, checkpoints, status, data and config.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, ee.msg)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "samdiffsr:", err)
	os.Exit(1)
}

// exitError ends the process with a specific exit code (2 = invalid configuration or usage).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }
