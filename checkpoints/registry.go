package checkpoints

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/internal/natsutil"
	"github.com/samdiffsr/samdiffsr/internal/objstore"
)

// Registry is a client of one job's checkpoint registry: the records the
// coordinator committed through raft, and their files in the job's Object Store
// bucket (content-addressed by SHA-256).
type Registry struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	names natsutil.Names
	store *objstore.Store
}

// requestTimeout bounds one request to the coordinator.
const requestTimeout = 10 * time.Second

// NewRegistry returns a client of job's registry over nc.
func NewRegistry(nc *nats.Conn, job string) (*Registry, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: jetstream: %w", err)
	}
	return &Registry{nc: nc, js: js, names: natsutil.NamesFor(job)}, nil
}

// Job is the registry's job name.
func (r *Registry) Job() string { return r.names.Job }

func (r *Registry) bucket(ctx context.Context, create bool) (*objstore.Store, error) {
	if r.store != nil {
		return r.store, nil
	}
	st, err := objstore.Open(ctx, r.js, r.names.CheckpointBucket(), objstore.Options{Create: create,
		Description: "samdiffsr checkpoints of job " + r.names.Job})
	if err != nil {
		return nil, fmt.Errorf("checkpoints: the registry of job %s has no bucket yet (nothing published?): %w", r.names.Job, err)
	}
	r.store = st
	return st, nil
}

// Describe reads what a checkpoint folder says of itself (its manifest and the
// model file's metadata) as a registry record without a sequence number. The files
// are not hashed here: Publish checks each against the manifest while uploading.
func Describe(dir string) (natsutil.CheckpointInfo, error) {
	man, err := ReadManifest(dir)
	if err != nil {
		return natsutil.CheckpointInfo{}, err
	}
	meta, err := ReadMeta(filepath.Join(dir, ModelFile))
	if err != nil {
		return natsutil.CheckpointInfo{}, err
	}
	info := natsutil.CheckpointInfo{ID: meta.Stage + "/" + filepath.Base(dir), Stage: meta.Stage, Step: meta.Step,
		ConfigHash: meta.ConfigHash, Metrics: meta.Metrics}
	if st, err := os.Stat(filepath.Join(dir, ManifestFile)); err == nil {
		info.Created = st.ModTime().UTC()
	}
	names := make([]string, 0, len(man.Files))
	for name := range man.Files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		f := man.Files[name]
		info.Files = append(info.Files, natsutil.CheckpointFile{Name: name, SHA256: f.SHA256, Size: f.Size})
	}
	// The manifest travels too, so a pulled folder verifies like the original.
	sum, size, err := fsutil.FileSHA256(filepath.Join(dir, ManifestFile))
	if err != nil {
		return natsutil.CheckpointInfo{}, fmt.Errorf("checkpoints: %w", err)
	}
	info.Files = append(info.Files, natsutil.CheckpointFile{Name: ManifestFile, SHA256: sum, Size: size})
	if meta.Stage == "" {
		return info, fmt.Errorf("checkpoints: %s has no stage in its metadata; only checkpoints written by `samdiffsr train` can be published", dir)
	}
	return info, nil
}

// maxHeader bounds a safetensors header ReadMeta accepts (the format's own limit
// is 100 MB; ours are a few hundred KB).
const maxHeader = 100 << 20

// ReadMeta reads the __metadata__ of a safetensors file written by Save without
// reading its tensors.
func ReadMeta(path string) (Meta, error) {
	f, err := os.Open(path)
	if err != nil {
		return Meta{}, fmt.Errorf("checkpoints: %w", err)
	}
	defer f.Close()
	var n uint64
	if err := binary.Read(f, binary.LittleEndian, &n); err != nil {
		return Meta{}, fmt.Errorf("checkpoints: %s: header length: %w (not a safetensors file?)", path, err)
	}
	if n == 0 || n > maxHeader {
		return Meta{}, fmt.Errorf("checkpoints: %s: header length %d is not plausible (not a safetensors file?)", path, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(f, buf); err != nil {
		return Meta{}, fmt.Errorf("checkpoints: %s: header: %w (truncated file?)", path, err)
	}
	var hdr struct {
		Meta map[string]string `json:"__metadata__"`
	}
	if err := json.Unmarshal(buf, &hdr); err != nil {
		return Meta{}, fmt.Errorf("checkpoints: %s: header JSON: %w", path, err)
	}
	m, err := parseMeta(hdr.Meta)
	if err != nil {
		return Meta{}, fmt.Errorf("checkpoints: %s: %w", path, err)
	}
	return m, nil
}

// Publish uploads the files of the checkpoint folder dir to the bucket (files the
// bucket already holds are not sent again) and only then asks the coordinator to
// commit its record, with the writer's retention policy. It returns the committed
// record's sequence number and the IDs retention pruned.
func (r *Registry) Publish(ctx context.Context, dir string, pol natsutil.CheckpointRetention, worker string) (natsutil.Reply, error) {
	info, err := Describe(dir)
	if err != nil {
		return natsutil.Reply{}, err
	}
	st, err := r.bucket(ctx, true)
	if err != nil {
		return natsutil.Reply{}, err
	}
	for _, f := range info.Files {
		if _, err := st.PutFileDigest(ctx, natsutil.CheckpointObject(f.SHA256), filepath.Join(dir, f.Name), f.SHA256, f.Size,
			map[string]string{"checkpoint": info.ID, "file": f.Name}); err != nil {
			return natsutil.Reply{}, fmt.Errorf("checkpoints: upload %s of %s: %w", f.Name, dir, err)
		}
	}
	rep, err := natsutil.RequestLeader(ctx, r.nc, r.names.Coord("checkpoints.publish"),
		natsutil.CheckpointPublish{Checkpoint: info, Retention: pol, Worker: worker}, requestTimeout)
	if err != nil {
		return rep, fmt.Errorf("checkpoints: commit %s: %w", info.ID, err)
	}
	return rep, nil
}

// List returns every committed record after afterSeq (of stage, when set), in
// commit order, with the aliases.
func (r *Registry) List(ctx context.Context, afterSeq uint64, stage string) (natsutil.CheckpointList, error) {
	var all natsutil.CheckpointList
	for {
		var page natsutil.CheckpointList
		if err := natsutil.Request(ctx, r.nc, r.names.Coord("checkpoints.list"),
			natsutil.CheckpointListRequest{AfterSeq: afterSeq, Stage: stage, Limit: 1000}, &page, requestTimeout); err != nil {
			return all, fmt.Errorf("checkpoints: list the registry of job %s (is its coordinator running?): %w", r.names.Job, err)
		}
		if page.Err != "" {
			return all, fmt.Errorf("checkpoints: list: %s", page.Err)
		}
		all.Checkpoints = append(all.Checkpoints, page.Checkpoints...)
		all.Aliases, all.LastSeq = page.Aliases, page.LastSeq
		if !page.More || len(page.Checkpoints) == 0 {
			return all, nil
		}
		afterSeq = page.Checkpoints[len(page.Checkpoints)-1].Seq
	}
}

// Selector picks one record: by ID, alias (latest, best, a user tag), or step;
// Stage narrows latest/best/step to one training stage.
type Selector struct {
	ID, Alias, Stage string
	// Step selects by step when HasStep.
	Step    int64
	HasStep bool
}

// String renders the selector as `checkpoints pull` would take it.
func (s Selector) String() string {
	var b strings.Builder
	switch {
	case s.ID != "":
		b.WriteString(s.ID)
	case s.HasStep:
		b.WriteString("step " + strconv.FormatInt(s.Step, 10))
	default:
		b.WriteString(s.Alias)
	}
	if s.Stage != "" && s.ID == "" {
		b.WriteString(" of stage " + s.Stage)
	}
	return b.String()
}

// Select finds the record sel names in a listing.
func Select(l natsutil.CheckpointList, sel Selector) (natsutil.CheckpointInfo, error) {
	id := sel.ID
	switch {
	case id != "":
	case sel.HasStep:
		var hits []natsutil.CheckpointInfo
		for _, c := range l.Checkpoints {
			if c.Step == sel.Step && (sel.Stage == "" || c.Stage == sel.Stage) {
				hits = append(hits, c)
			}
		}
		switch len(hits) {
		case 1:
			return hits[0], nil
		case 0:
			return natsutil.CheckpointInfo{}, fmt.Errorf("checkpoints: no committed checkpoint at step %d%s (see `samdiffsr checkpoints list`; retention may have pruned it)", sel.Step, stageNote(sel.Stage))
		}
		return natsutil.CheckpointInfo{}, fmt.Errorf("checkpoints: step %d exists in %d stages; pass --stage (rrdb or diffusion)", sel.Step, len(hits))
	default:
		alias := sel.Alias
		if alias == "" {
			alias = "latest"
		}
		if sel.Stage != "" && (alias == "latest" || alias == "best") {
			alias += "." + sel.Stage
		}
		var ok bool
		if id, ok = l.Aliases[alias]; !ok {
			if strings.HasPrefix(alias, "best") {
				return natsutil.CheckpointInfo{}, fmt.Errorf("checkpoints: no checkpoint%s has a validation PSNR-Y yet, so there is no best (validation runs every train.val_every steps)", stageNote(sel.Stage))
			}
			return natsutil.CheckpointInfo{}, fmt.Errorf("checkpoints: no alias %q in the registry (it has %s)", alias, aliasList(l.Aliases))
		}
	}
	for _, c := range l.Checkpoints {
		if c.ID == id {
			return c, nil
		}
	}
	return natsutil.CheckpointInfo{}, fmt.Errorf("checkpoints: no committed checkpoint %q in the registry", id)
}

func stageNote(stage string) string {
	if stage == "" {
		return ""
	}
	return " of stage " + stage
}

func aliasList(al map[string]string) string {
	if len(al) == 0 {
		return "none: nothing is committed yet"
	}
	var ks []string
	for k := range al {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// Resolve lists the registry and selects one record.
func (r *Registry) Resolve(ctx context.Context, sel Selector) (natsutil.CheckpointInfo, error) {
	l, err := r.List(ctx, 0, "")
	if err != nil {
		return natsutil.CheckpointInfo{}, err
	}
	return Select(l, sel)
}

// Tag sets alias to the record id, or removes alias.
func (r *Registry) Tag(ctx context.Context, alias, id string, remove bool) error {
	_, err := natsutil.RequestLeader(ctx, r.nc, r.names.Coord("checkpoints.tag"), natsutil.CheckpointTag{Alias: alias, ID: id, Remove: remove}, requestTimeout)
	if err != nil {
		return fmt.Errorf("checkpoints: tag %s: %w", alias, err)
	}
	return nil
}

// DefaultCacheDir is where pulled files are cached unless told otherwise:
// $XDG_CACHE_HOME/samdiffsr/checkpoints (~/.cache/... on Linux).
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("checkpoints: no user cache folder (%w); pass --cache DIR", err)
	}
	return filepath.Join(d, "samdiffsr", "checkpoints"), nil
}

// PullResult says what a pull did.
type PullResult struct {
	Dir string
	// Fetched files came over the network (FetchedBytes in all); Reused ones from
	// the cache; Unchanged says the destination already held this checkpoint.
	Fetched, Reused int
	FetchedBytes    int64
	Unchanged       bool
}

// Pull writes the checkpoint info describes to the folder out: every file is
// fetched into the cache (cacheDir/sha256/<hex>) unless the cache already holds it
// with the right digest, checked against the digest the registry committed, then
// the folder is assembled beside out and swapped in. On any error out is left as
// it was.
func (r *Registry) Pull(ctx context.Context, info natsutil.CheckpointInfo, out, cacheDir string) (PullResult, error) {
	res := PullResult{Dir: out}
	if same, _ := holds(out, info); same { // out already is this checkpoint
		res.Unchanged = true
		r.reportPull()
		return res, nil
	}
	for _, f := range info.Files {
		if strings.ContainsAny(f.Name, `/\`) || f.Name == "" || f.Name == "." || f.Name == ".." {
			return res, fmt.Errorf("checkpoints: %s lists file %q, which is not a plain file name", info.ID, f.Name)
		}
		path := cachePath(cacheDir, f.SHA256)
		if sum, size, err := fsutil.FileSHA256(path); err == nil && sum == f.SHA256 && size == f.Size {
			res.Reused++
			continue
		}
		st, err := r.bucket(ctx, false)
		if err != nil {
			return res, err
		}
		got, err := st.GetFile(ctx, natsutil.CheckpointObject(f.SHA256), f.SHA256, path)
		if err != nil {
			return res, fmt.Errorf("checkpoints: pull %s, file %s (registry sha256 %s): %w; %s was left as it was", info.ID, f.Name, f.SHA256, err, out)
		}
		res.Fetched++
		res.FetchedBytes += got.Size
	}
	if err := assemble(out, info, cacheDir); err != nil {
		return res, err
	}
	r.reportPull()
	return res, nil
}

// reportPull tells the coordinator a pull happened (a counter; fire and forget).
func (r *Registry) reportPull() { r.nc.Publish(r.names.Coord("checkpoints.pulled"), nil) }

func cachePath(cacheDir, sum string) string { return filepath.Join(cacheDir, "sha256", sum) }

// holds says whether dir already is the checkpoint info describes (its files have
// the registry's digests).
func holds(dir string, info natsutil.CheckpointInfo) (bool, error) {
	for _, f := range info.Files {
		sum, size, err := fsutil.FileSHA256(filepath.Join(dir, f.Name))
		if err != nil || sum != f.SHA256 || size != f.Size {
			return false, err
		}
	}
	return true, nil
}

// assemble links (or copies) the cached files of info into a new folder beside
// out, checks its manifest against the registry's digests, and swaps it in place
// of out. The cached files were verified when they were fetched or reused.
func assemble(out string, info natsutil.CheckpointInfo, cacheDir string) (err error) {
	parent := filepath.Dir(filepath.Clean(out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("checkpoints: create %s: %w", parent, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(out)+".pull-*")
	if err != nil {
		return fmt.Errorf("checkpoints: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	for _, f := range info.Files {
		if err := linkOrCopy(cachePath(cacheDir, f.SHA256), filepath.Join(tmp, f.Name)); err != nil {
			return err
		}
	}
	if err := manifestAgrees(tmp, info); err != nil {
		return err
	}
	return swapDir(tmp, out)
}

// manifestAgrees checks that the manifest in dir (when info lists one) names the
// same files, sizes and digests as the registry's record, so the pulled folder
// verifies like the original without hashing it again.
func manifestAgrees(dir string, info natsutil.CheckpointInfo) error {
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checkpoints: %w", err)
	}
	var man Manifest
	if err := json.Unmarshal(data, &man); err != nil {
		return fmt.Errorf("checkpoints: pulled %s: manifest: %w", info.ID, err)
	}
	want := map[string]natsutil.CheckpointFile{}
	for _, f := range info.Files {
		if f.Name != ManifestFile {
			want[f.Name] = f
		}
	}
	if len(man.Files) != len(want) {
		return fmt.Errorf("checkpoints: pulled %s: its manifest lists %d files, the registry %d", info.ID, len(man.Files), len(want))
	}
	for name, e := range man.Files {
		if f, ok := want[name]; !ok || f.SHA256 != e.SHA256 || f.Size != e.Size {
			return fmt.Errorf("checkpoints: pulled %s: file %s: manifest says sha256 %.12s (%d bytes), the registry %.12s (%d)", info.ID, name, e.SHA256, e.Size, f.SHA256, f.Size)
		}
	}
	return nil
}

// linkOrCopy hard-links src to dst, or copies it where links cannot be made (the
// cache on another file system). A linked file shares the cache's bytes: editing it
// in place damages the cache entry, which the next reuse detects by its digest and
// fetches again.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst)
}

// swapDir puts the folder tmp at out: out's old content is moved aside and removed
// only after the new one is in place.
func swapDir(tmp, out string) error {
	old := ""
	if _, err := os.Lstat(out); err == nil {
		old = tmp + ".old"
		if err := os.Rename(out, old); err != nil {
			return fmt.Errorf("checkpoints: move the old %s aside: %w", out, err)
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		if old != "" {
			os.Rename(old, out)
		}
		return fmt.Errorf("checkpoints: put the pulled checkpoint at %s: %w", out, err)
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync()
		d.Close()
	}
	if old != "" {
		os.RemoveAll(old)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("checkpoints: cached file: %w", err)
	}
	defer in.Close()
	return fsutil.WriteAtomic(dst, 0o644, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// Watch calls fn for every record committed after afterSeq, once each, in commit
// order, until ctx ends or fn fails. It wakes on the coordinator's commit notices
// and polls every interval besides, so a missed notice (a disconnect) costs only
// latency; fn's record is the position to resume from (persist rec.Seq). Records
// retention pruned before Watch saw them are reported through skipped.
func (r *Registry) Watch(ctx context.Context, afterSeq uint64, interval time.Duration, fn func(natsutil.CheckpointInfo) error, skipped func(from, to uint64)) error {
	wake := make(chan struct{}, 1)
	sub, err := r.nc.Subscribe(r.names.Coord("checkpoints.committed"), func(*nats.Msg) {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("checkpoints: watch: %w", err)
	}
	defer sub.Unsubscribe()
	for {
		l, err := r.List(ctx, afterSeq, "")
		if err != nil && ctx.Err() != nil {
			return nil
		}
		// A failed list (coordinator down, leader changing) is retried at the next poll.
		for _, c := range l.Checkpoints {
			if c.Seq > afterSeq+1 && skipped != nil {
				skipped(afterSeq+1, c.Seq-1)
			}
			if err := fn(c); err != nil {
				return err
			}
			afterSeq = c.Seq
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-time.After(interval):
		}
	}
}

// ErrNotRegistryRef is returned by ParseRef for a string that is not a registry reference.
var ErrNotRegistryRef = errors.New("not a registry reference")

// Ref is a registry reference: nats://HOST:PORT/JOB@SELECTOR, where SELECTOR is
// latest, best, step=N, an alias, or a record ID (STAGE/step_NNNNNNNNN); a
// "STAGE:" prefix narrows latest/best/step=N to one stage (diffusion:best).
type Ref struct {
	// URL is the NATS server (nats://HOST:PORT or tls://HOST:PORT).
	URL string
	Job string
	Sel Selector
}

// ParseRef parses a registry reference; strings that do not start with nats:// or
// tls:// give ErrNotRegistryRef.
func ParseRef(s string) (Ref, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || (scheme != "nats" && scheme != "tls") {
		return Ref{}, ErrNotRegistryRef
	}
	host, path, ok := strings.Cut(rest, "/")
	if !ok || host == "" {
		return Ref{}, fmt.Errorf("checkpoint reference %q: want %s://HOST:PORT/JOB@SELECTOR (e.g. nats://10.0.0.1:4222/samdiffsr@best)", s, scheme)
	}
	job, sel, _ := strings.Cut(path, "@")
	if job == "" || strings.Contains(job, "/") {
		return Ref{}, fmt.Errorf("checkpoint reference %q: name the job after the host (nats://HOST:PORT/JOB@SELECTOR)", s)
	}
	ref := Ref{URL: scheme + "://" + host, Job: job}
	if sel == "" {
		sel = "latest"
	}
	if st, rest, ok := strings.Cut(sel, ":"); ok {
		ref.Sel.Stage, sel = st, rest
	}
	switch {
	case strings.HasPrefix(sel, "step="):
		n, err := strconv.ParseInt(strings.TrimPrefix(sel, "step="), 10, 64)
		if err != nil || n < 0 {
			return Ref{}, fmt.Errorf("checkpoint reference %q: step=%s is not a step number", s, strings.TrimPrefix(sel, "step="))
		}
		ref.Sel.Step, ref.Sel.HasStep = n, true
	case strings.Contains(sel, "/"):
		ref.Sel.ID = sel
	default:
		ref.Sel.Alias = sel
	}
	return ref, nil
}
