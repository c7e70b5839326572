// Package progress reports the progress of long jobs: a bar redrawn in place on a
// terminal, plain log lines at a steady interval otherwise (CI logs, files, pipes).
package progress

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Bar tracks done/total work items and renders rate and ETA. It is safe for concurrent use.
type Bar struct {
	mu       sync.Mutex
	label    string
	unit     string
	total    int64
	done     int64
	start    time.Time
	last     time.Time
	interval time.Duration
	out      io.Writer
	tty      bool
	log      *slog.Logger
	extra    string
	now      func() time.Time
	finished bool
	// shown is the count of the last rendered line (-1: none yet).
	shown int64
	// base is what was already done before this bar started counting (the first Set
	// of a resumed job): it counts towards done/total but not towards the rate.
	base    int64
	counted bool
}

// Options configure a Bar.
type Options struct {
	// Label names the job ("masks", "train").
	Label string
	// Unit names one item ("images", "steps").
	Unit string
	// Total is the number of items (0 if unknown).
	Total int64
	// Out is where a terminal bar is drawn (default os.Stderr).
	Out io.Writer
	// Log receives plain progress lines when Out is not a terminal (default slog.Default()).
	Log *slog.Logger
	// Interval between plain log lines (default 5s) or terminal redraws (always at most 10/s).
	Interval time.Duration
	// ForceTTY draws the bar even when Out is not a terminal (tests).
	ForceTTY *bool
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// New starts a Bar.
func New(o Options) *Bar {
	if o.Out == nil {
		o.Out = os.Stderr
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Interval == 0 {
		o.Interval = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	tty := false
	if f, ok := o.Out.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	if o.ForceTTY != nil {
		tty = *o.ForceTTY
	}
	if tty {
		o.Interval = 100 * time.Millisecond
	}
	now := o.Now()
	return &Bar{label: o.Label, unit: o.Unit, total: o.Total, start: now, out: o.Out, tty: tty, log: o.Log,
		interval: o.Interval, now: o.Now, shown: -1}
}

// SetTotal changes the number of items.
func (b *Bar) SetTotal(n int64) {
	b.mu.Lock()
	b.total = n
	b.mu.Unlock()
}

// SetExtra sets a short status shown after the counters (e.g. "loss 0.0312").
func (b *Bar) SetExtra(s string) {
	b.mu.Lock()
	b.extra = s
	b.mu.Unlock()
}

// Add records n more finished items and redraws when due.
func (b *Bar) Add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	b.counted = true
	if t := b.now(); t.Sub(b.last) >= b.interval || (b.total > 0 && b.done >= b.total && b.shown != b.done) {
		b.last = t
		b.render(false)
	}
}

// Set records the absolute number of finished items. The first count given, when it
// comes from Set (e.g. a resumed step count), is taken as done before the bar started:
// rates and ETA count only the items after it.
func (b *Bar) Set(n int64) {
	b.mu.Lock()
	if !b.counted {
		b.base, b.counted = n, true
	}
	b.done = n
	b.mu.Unlock()
	b.Add(0)
}

// Done reports the final state once.
func (b *Bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	if !b.tty && b.shown == b.done {
		return // the final count is already logged
	}
	b.render(true)
}

// Line returns the current status line (without terminal control characters).
func (b *Bar) Line() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.line()
}

func (b *Bar) line() string {
	el := b.now().Sub(b.start)
	rate := 0.0
	if el > 0 {
		rate = float64(b.done-b.base) / el.Seconds()
	}
	var sb strings.Builder
	if b.label != "" {
		sb.WriteString(b.label)
		sb.WriteString(" ")
	}
	if b.total > 0 {
		pct := 100 * float64(b.done) / float64(b.total)
		if b.tty {
			const width = 24
			fill := int(float64(width) * float64(b.done) / float64(b.total))
			fill = max(0, min(width, fill))
			sb.WriteString("[" + strings.Repeat("=", fill) + strings.Repeat(" ", width-fill) + "] ")
		}
		fmt.Fprintf(&sb, "%d/%d %s (%.0f%%)", b.done, b.total, b.unit, pct)
	} else {
		fmt.Fprintf(&sb, "%d %s", b.done, b.unit)
	}
	fmt.Fprintf(&sb, " %.2f %s/s", rate, b.unit)
	if b.total > 0 && rate > 0 && b.done < b.total {
		eta := time.Duration(float64(b.total-b.done) / rate * float64(time.Second))
		fmt.Fprintf(&sb, " ETA %s", eta.Round(time.Second))
	}
	fmt.Fprintf(&sb, " elapsed %s", el.Round(time.Second))
	if b.extra != "" {
		sb.WriteString(" ")
		sb.WriteString(b.extra)
	}
	return sb.String()
}

func (b *Bar) render(final bool) {
	b.shown = b.done
	l := b.line()
	if b.tty {
		end := ""
		if final {
			end = "\n"
		}
		fmt.Fprintf(b.out, "\r\033[K%s%s", l, end)
		return
	}
	b.log.Info("progress", "status", l)
}
