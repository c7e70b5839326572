// Package objstore is samdiffsr's one seam to the NATS JetStream Object Store: put
// and get with a SHA-256 digest and retries, shared by the mask farm, the checkpoint
// registry and the dataset shards.
//
// Every object carries its SHA-256 (hex) in its metadata ("sha256"). A put of a name
// that already holds the same digest transfers nothing; a get streams into a
// temporary file, checks the digest the caller expects (the one the coordinator
// committed, not the one the bucket claims) and only then renames the file into
// place, so a corrupted or half-written object never reaches a reader.
package objstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
)

// MetaSHA256 and MetaSize are the metadata keys that hold an object's digest and size.
const (
	MetaSHA256 = "sha256"
	MetaSize   = "size"
)

// Options tune Open. The zero value opens an existing bucket with the default retries.
type Options struct {
	// Create makes the bucket when it does not exist (file storage).
	Create bool
	// Replicas is the bucket's replica count when it is created (0: 1).
	Replicas int
	// Description is the created bucket's description.
	Description string
	// Attempts bounds the tries of one put or get (0: 4); Backoff is the first pause
	// between them, doubling (0: 200ms).
	Attempts int
	Backoff  time.Duration
}

// Store is one Object Store bucket.
type Store struct {
	os       jetstream.ObjectStore
	bucket   string
	attempts int
	backoff  time.Duration
}

// Info describes one object a put or get handled.
type Info struct {
	Name   string
	SHA256 string
	Size   int64
	// Skipped says a put found the same digest already stored and sent nothing.
	Skipped bool
	// Meta is the object's metadata (gets and Stat).
	Meta map[string]string
}

// DigestError is a get whose bytes do not have the expected SHA-256.
type DigestError struct {
	Bucket, Name, Want, Got string
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("object %s in bucket %s has SHA-256 %s, expected %s (the object was corrupted or overwritten)", e.Name, e.Bucket, e.Got, e.Want)
}

// ErrNotFound is returned (wrapped) by gets of a name the bucket does not hold.
var ErrNotFound = jetstream.ErrObjectNotFound

// Open opens bucket through js, creating it when opts.Create is set.
func Open(ctx context.Context, js jetstream.JetStream, bucket string, opts Options) (*Store, error) {
	st, err := js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && opts.Create {
		replicas := max(opts.Replicas, 1)
		st, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucket, Description: opts.Description,
			Storage: jetstream.FileStorage, Replicas: replicas})
		if errors.Is(err, jetstream.ErrBucketExists) {
			st, err = js.ObjectStore(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("objstore: open bucket %s: %w", bucket, err)
	}
	s := &Store{os: st, bucket: bucket, attempts: opts.Attempts, backoff: opts.Backoff}
	if s.attempts <= 0 {
		s.attempts = 4
	}
	if s.backoff <= 0 {
		s.backoff = 200 * time.Millisecond
	}
	return s, nil
}

// Bucket is the bucket's name.
func (s *Store) Bucket() string { return s.bucket }

// PutFile uploads the file at path as name, unless name already holds the file's
// SHA-256. meta is added to the object's metadata.
func (s *Store) PutFile(ctx context.Context, name, path string, meta map[string]string) (Info, error) {
	sum, size, err := fsutil.FileSHA256(path)
	if err != nil {
		return Info{}, fmt.Errorf("objstore: put %s: %w", path, err)
	}
	return s.put(ctx, name, sum, size, meta, func() (io.ReadCloser, error) { return os.Open(path) })
}

// PutFileDigest uploads the file at path as name, given its SHA-256 and size (a
// manifest's), without hashing it first: the digest is computed while the bytes
// stream, and an upload whose bytes do not match (the file changed or was damaged
// on disk) is deleted again and reported. name already holding sum is not sent.
func (s *Store) PutFileDigest(ctx context.Context, name, path, sum string, size int64, meta map[string]string) (Info, error) {
	return s.put(ctx, name, sum, size, meta, func() (io.ReadCloser, error) { return os.Open(path) })
}

// PutBytes uploads data as name, unless name already holds its SHA-256.
func (s *Store) PutBytes(ctx context.Context, name string, data []byte, meta map[string]string) (Info, error) {
	h := sha256.Sum256(data)
	return s.put(ctx, name, hex.EncodeToString(h[:]), int64(len(data)), meta, func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}

func (s *Store) put(ctx context.Context, name, sum string, size int64, meta map[string]string, open func() (io.ReadCloser, error)) (Info, error) {
	info := Info{Name: name, SHA256: sum, Size: size}
	if cur, err := s.os.GetInfo(ctx, name); err == nil && cur.Metadata[MetaSHA256] == sum && int64(cur.Size) == size {
		info.Skipped = true
		return info, nil
	}
	md := map[string]string{MetaSHA256: sum, MetaSize: strconv.FormatInt(size, 10)}
	for k, v := range meta {
		if k != MetaSHA256 && k != MetaSize {
			md[k] = v
		}
	}
	err := s.retry(ctx, "put "+name, func() error {
		r, err := open()
		if err != nil {
			return permanent{err}
		}
		defer r.Close()
		hr := &hashingReader{r: r, h: sha256.New()}
		if _, err := s.os.Put(ctx, jetstream.ObjectMeta{Name: name, Metadata: md}, hr); err != nil {
			return err
		}
		if got := hex.EncodeToString(hr.h.Sum(nil)); got != sum || hr.n != size {
			s.os.Delete(ctx, name)
			return permanent{fmt.Errorf("the bytes sent (%d, SHA-256 %s) are not the %d bytes with SHA-256 %s expected: the source changed or is damaged; object deleted", hr.n, got, size, sum)}
		}
		return nil
	})
	return info, err
}

// hashingReader hashes and counts what is read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// GetBytes reads name whole and checks it against wantSHA256 (hex; "" checks against
// the digest in the object's metadata). Use it for small objects only.
func (s *Store) GetBytes(ctx context.Context, name, wantSHA256 string) ([]byte, Info, error) {
	var buf bytes.Buffer
	info, err := s.get(ctx, name, wantSHA256, func() (io.Writer, func() error, func()) {
		buf.Reset()
		return &buf, func() error { return nil }, func() {}
	})
	if err != nil {
		return nil, info, err
	}
	return buf.Bytes(), info, nil
}

// GetFile streams name into path (atomically: a temporary file in path's folder,
// renamed into place only when the digest matches). On any error path is left as it
// was.
func (s *Store) GetFile(ctx context.Context, name, wantSHA256, path string) (Info, error) {
	var tmp *os.File
	info, err := s.get(ctx, name, wantSHA256, func() (io.Writer, func() error, func()) {
		var err error
		tmp, err = createTemp(path)
		if err != nil {
			return errWriter{err}, func() error { return err }, func() {}
		}
		f := tmp
		commit := func() error {
			if err := f.Sync(); err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			return os.Rename(f.Name(), path)
		}
		abort := func() { f.Close(); os.Remove(f.Name()) }
		return f, commit, abort
	})
	if err != nil {
		return info, fmt.Errorf("%w (%s left as it was)", err, path)
	}
	return info, nil
}

// get reads name into the writer sink gives (a fresh one per attempt), verifying the
// digest before calling commit; abort undoes an attempt.
func (s *Store) get(ctx context.Context, name, want string, sink func() (w io.Writer, commit func() error, abort func())) (Info, error) {
	info := Info{Name: name}
	err := s.retry(ctx, "get "+name, func() error {
		obj, err := s.os.Get(ctx, name)
		if err != nil {
			if errors.Is(err, jetstream.ErrObjectNotFound) {
				return permanent{fmt.Errorf("object %s not in bucket %s: %w", name, s.bucket, err)}
			}
			return err
		}
		defer obj.Close()
		oi, err := obj.Info()
		if err != nil {
			return err
		}
		expect := want
		if expect == "" {
			expect = oi.Metadata[MetaSHA256]
		}
		w, commit, abort := sink()
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(w, h), obj)
		got := hex.EncodeToString(h.Sum(nil))
		if err != nil {
			abort()
			if errors.Is(err, jetstream.ErrDigestMismatch) {
				// NATS's own digest caught it: report ours so the caller sees both.
				return permanent{&DigestError{Bucket: s.bucket, Name: name, Want: expect, Got: got + " (partial read: " + err.Error() + ")"}}
			}
			return err
		}
		if expect != "" && got != expect {
			abort()
			return permanent{&DigestError{Bucket: s.bucket, Name: name, Want: expect, Got: got}}
		}
		if err := commit(); err != nil {
			abort()
			return permanent{err}
		}
		info.SHA256, info.Size, info.Meta = got, n, oi.Metadata
		return nil
	})
	return info, err
}

// Delete removes name; a name that is not there is not an error.
func (s *Store) Delete(ctx context.Context, name string) error {
	err := s.retry(ctx, "delete "+name, func() error {
		err := s.os.Delete(ctx, name)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil
		}
		return err
	})
	return err
}

// Stat returns name's digest and size from its metadata (ErrNotFound wrapped when absent).
func (s *Store) Stat(ctx context.Context, name string) (Info, error) {
	oi, err := s.os.GetInfo(ctx, name)
	if err != nil {
		return Info{}, fmt.Errorf("objstore: stat %s in %s: %w", name, s.bucket, err)
	}
	return Info{Name: name, SHA256: oi.Metadata[MetaSHA256], Size: int64(oi.Size), Meta: oi.Metadata}, nil
}

// Names lists the bucket's object names (deleted ones left out).
func (s *Store) Names(ctx context.Context) ([]string, error) {
	ls, err := s.os.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("objstore: list %s: %w", s.bucket, err)
	}
	out := make([]string, 0, len(ls))
	for _, o := range ls {
		out = append(out, o.Name)
	}
	return out, nil
}

// Raw is the underlying JetStream object store, for tests and tools that need to
// bypass the digest checks (e.g. to plant a corrupted object).
func (s *Store) Raw() jetstream.ObjectStore { return s.os }

// permanent marks an error that retrying cannot mend.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// retry runs op up to s.attempts times with doubling pauses, stopping early on a
// permanent error or when ctx ends.
func (s *Store) retry(ctx context.Context, what string, op func() error) error {
	wait := s.backoff
	var err error
	for attempt := 1; ; attempt++ {
		err = op()
		if err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return fmt.Errorf("objstore: %s: %w", what, p.error)
		}
		if ctx.Err() != nil || attempt >= s.attempts {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait *= 2
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = errors.Join(err, ctx.Err())
	}
	return fmt.Errorf("objstore: %s in bucket %s (%d attempts): %w", what, s.bucket, s.attempts, err)
}

// createTemp opens a temporary file beside path.
func createTemp(path string) (*os.File, error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create folder %s: %w", dir, err)
	}
	return os.CreateTemp(dir, "."+base+".part-*")
}

type errWriter struct{ err error }

func (e errWriter) Write([]byte) (int, error) { return 0, e.err }
