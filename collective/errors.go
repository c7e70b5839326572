package collective

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// PeerError is a ring failure attributed to one peer: the neighbour that sent
// nothing, closed its connection, or sent a frame that does not fit. When one
// rank fails, its neighbours' errors name it, and theirs name them in turn, as
// the failure travels around the ring.
type PeerError struct {
	Generation int
	Step       int64
	Rank       int
	Host       string
	// Err says what the peer did ("sent nothing for 5s: ...").
	Err error
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("collective: generation %d step %d: rank %d (%s) %v", e.Generation, e.Step, e.Rank, e.Host, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

// describeIO turns a failed read from (or write to) a peer into what the peer
// did, as a sentence's predicate.
func describeIO(err error, reading bool, timeout time.Duration) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		if reading {
			return fmt.Errorf("sent nothing for %s: %w", timeout, err)
		}
		return fmt.Errorf("took nothing for %s (it stopped reading): %w", timeout, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrClosedPipe):
		return fmt.Errorf("closed the connection: %w", err)
	case errors.Is(err, errMemCut):
		return fmt.Errorf("is unreachable (link cut): %w", err)
	}
	return fmt.Errorf("connection failed: %w", err)
}
