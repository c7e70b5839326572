package worker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/dataset"
	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

// submitChunk is how many manifest entries go in one submit request (well under the
// 1 MiB NATS payload limit).
const submitChunk = 1000

// FileSHA256 returns the hex SHA-256 and size of a file.
func FileSHA256(path string) (string, int64, error) { return fsutil.FileSHA256(path) }

// Manifest hashes the HR file of each image (threads files at a time) into manifest entries.
func Manifest(ctx context.Context, images []dataset.Image, threads int) ([]natsutil.ImageEntry, error) {
	out := make([]natsutil.ImageEntry, len(images))
	threads = max(threads, 1)
	var wg sync.WaitGroup
	errs := make([]error, threads)
	for w := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(images); i += threads {
				if ctx.Err() != nil {
					errs[w] = ctx.Err()
					return
				}
				im := images[i]
				sum, size, err := FileSHA256(im.HRPath)
				if err != nil {
					errs[w] = fmt.Errorf("worker: hash image %s: %w", im.ID, err)
					return
				}
				out[i] = natsutil.ImageEntry{ID: im.ID, Path: im.HRPath, Size: size, SHA256: sum}
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// SubmitMasks sends the job spec and manifest to the coordinator's leader (in chunks,
// retried across leader changes); the leader queues one mask task per new image.
// It returns how many images were new.
func SubmitMasks(ctx context.Context, nc *nats.Conn, job, configHash string, entries []natsutil.ImageEntry) (int, error) {
	names := natsutil.NamesFor(job)
	added := 0
	for i := 0; i < len(entries) || i == 0; i += submitChunk {
		chunk := entries[i:min(i+submitChunk, len(entries))]
		rep, err := natsutil.RequestLeader(ctx, nc, names.Coord("submit"), natsutil.SubmitRequest{Job: job, ConfigHash: configHash, Images: chunk}, 30*time.Second)
		if err != nil {
			return added, fmt.Errorf("worker: submit manifest: %w", err)
		}
		added += rep.Added
		if len(entries) == 0 {
			break
		}
	}
	return added, nil
}

// FarmStatus asks any coordinator voter for the status.
func FarmStatus(ctx context.Context, nc *nats.Conn, job string) (natsutil.Status, error) {
	var st natsutil.Status
	err := natsutil.Request(ctx, nc, natsutil.NamesFor(job).Coord("status"), struct{}{}, &st, 5*time.Second)
	return st, err
}

// Ledger returns every ledger entry in state ("" = all), paging through a coordinator voter.
func Ledger(ctx context.Context, nc *nats.Conn, job, state string) ([]natsutil.LedgerEntry, error) {
	var all []natsutil.LedgerEntry
	req := natsutil.LedgerRequest{State: state, Limit: 2000}
	for {
		var page natsutil.LedgerPage
		if err := natsutil.Request(ctx, nc, natsutil.NamesFor(job).Coord("ledger"), req, &page, 10*time.Second); err != nil {
			return nil, fmt.Errorf("worker: read the ledger: %w", err)
		}
		all = append(all, page.Tasks...)
		if !page.More || len(page.Tasks) == 0 {
			return all, nil
		}
		req.After = page.Tasks[len(page.Tasks)-1].ID
	}
}

// PullMasks writes the label map of every done task to out in the layout `samdiffsr
// masks` writes (<out>/<ID>.png and <out>/<ID>.json), checking each against the
// digest the ledger committed. Files already there with the right digest are kept.
// It returns how many files it wrote and how many it kept.
func PullMasks(ctx context.Context, nc *nats.Conn, job, out string) (written, kept int, err error) {
	entries, err := Ledger(ctx, nc, job, "done")
	if err != nil {
		return 0, 0, err
	}
	ex, err := NewMaskExporter(ctx, nc, job, out)
	if err != nil {
		return 0, 0, err
	}
	return ex.Export(ctx, entries)
}

// MaskExporter writes label maps of done tasks from the job's Object Store to a folder.
type MaskExporter struct {
	store *objstore.Store
	out   string
}

// NewMaskExporter opens the job's mask bucket for exports to out.
func NewMaskExporter(ctx context.Context, nc *nats.Conn, job, out string) (*MaskExporter, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("worker: jetstream: %w", err)
	}
	store, err := objstore.Open(ctx, js, natsutil.NamesFor(job).MaskBucket(), objstore.Options{})
	if err != nil {
		return nil, fmt.Errorf("worker: mask bucket of job %s: %w", job, err)
	}
	return &MaskExporter{store: store, out: out}, nil
}

// Export writes the label maps of entries (done tasks), several at once, and returns
// how many it wrote and how many were already there.
func (x *MaskExporter) Export(ctx context.Context, entries []natsutil.LedgerEntry) (written, kept int, err error) {
	store, out := x.store, x.out
	// Several label maps at once: each write is fsynced, and the store answers in parallel.
	const parallel = 8
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan natsutil.LedgerEntry)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range next {
				wrote, err := pullOne(ctx, store, out, e)
				mu.Lock()
				switch {
				case err != nil && firstErr == nil:
					firstErr = err
				case err == nil && wrote:
					written++
				case err == nil:
					kept++
				}
				mu.Unlock()
			}
		}()
	}
	for _, e := range entries {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		next <- e
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return written, kept, firstErr
}

// pullOne writes the label map of one done task unless it is already there.
func pullOne(ctx context.Context, store *objstore.Store, out string, e natsutil.LedgerEntry) (bool, error) {
	path := filepath.Join(out, filepath.FromSlash(e.ID)+".png")
	if sc, err := maskgen.ReadSidecar(path); err == nil && sc.LabelsSHA256 == e.Digest {
		if sum, _, err := FileSHA256(path); err == nil && sum == e.Digest {
			return false, nil
		}
	}
	// The ledger's digest, not the bucket's, is what the bytes must have.
	data, info, err := store.GetBytes(ctx, e.Key, e.Digest)
	if err != nil {
		return false, fmt.Errorf("worker: label map of %s: %w", e.ID, err)
	}
	sc, err := maskgen.UnmarshalSidecar([]byte(info.Meta["sidecar"]))
	if err != nil {
		return false, fmt.Errorf("worker: sidecar of %s: %w", e.ID, err)
	}
	sc.Source = e.ID // images with identical bytes share one object
	sc.LabelsSHA256 = e.Digest
	scData, err := maskgen.MarshalSidecar(sc)
	if err != nil {
		return false, err
	}
	if err := maskgen.WriteLabelMapFiles(path, data, scData); err != nil {
		return false, err
	}
	return true, nil
}

// ExportFollower exports the label maps of done tasks to a folder while a farm runs,
// so that writing them (each file is fsynced) overlaps segmentation, as it does in
// `samdiffsr masks`; Finish exports the rest.
type ExportFollower struct {
	x        *MaskExporter
	done     func() []natsutil.LedgerEntry
	exported map[string]bool
	stop     context.CancelFunc
	end      chan struct{}

	written, kept int
	err           error
}

// StartExportFollower exports, every interval, the entries done() lists that were not
// exported yet. done is called from the follower's goroutine.
func StartExportFollower(ctx context.Context, x *MaskExporter, done func() []natsutil.LedgerEntry, interval time.Duration) *ExportFollower {
	f := &ExportFollower{x: x, done: done, exported: map[string]bool{}, end: make(chan struct{})}
	ctx, f.stop = context.WithCancel(ctx)
	go func() {
		defer close(f.end)
		t := time.NewTicker(interval)
		defer t.Stop()
		for f.err == nil {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f.round(ctx)
			}
		}
	}()
	return f
}

func (f *ExportFollower) round(ctx context.Context) {
	var pending []natsutil.LedgerEntry
	for _, e := range f.done() {
		if !f.exported[e.ID] {
			pending = append(pending, e)
		}
	}
	if len(pending) == 0 {
		return
	}
	w, k, err := f.x.Export(ctx, pending)
	f.written += w
	f.kept += k
	if err != nil {
		if ctx.Err() == nil {
			f.err = err
		}
		return
	}
	for _, e := range pending {
		f.exported[e.ID] = true
	}
}

// Finish stops following, exports what is left and returns the totals.
func (f *ExportFollower) Finish(ctx context.Context) (written, kept int, err error) {
	f.stop()
	<-f.end
	if f.err == nil {
		f.round(ctx)
	}
	return f.written, f.kept, f.err
}
