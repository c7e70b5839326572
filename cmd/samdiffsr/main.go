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
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

// exitInternal is the exit code of a bug (a recovered panic): never 2, which means a
// usage or configuration error the user can fix.
const exitInternal = 70

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, newRootCmd())
	stop()
	os.Exit(code)
}

// run executes root and returns the process's exit code, printing the error. A panic
// on the command's goroutine is reported as an internal error (exit 70), not the Go
// runtime's exit 2.
func run(ctx context.Context, root *cobra.Command) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(root.ErrOrStderr(), "samdiffsr: internal error (a bug; please report it with the command line and this trace): %v\n%s", r, debug.Stack())
			code = exitInternal
		}
	}()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(root.ErrOrStderr(), ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(root.ErrOrStderr(), "samdiffsr:", err)
	return 1
}

// exitError ends the process with a specific exit code (2 = invalid configuration or usage).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }
