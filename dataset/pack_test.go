package dataset

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/internal/fsutil"
	"github.com/samdiffsr/samdiffsr/maskgen"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// packTestSet writes n synthetic w x h images (LR files for every other one, so
// both LR paths are packed) and their label maps.
func packTestSet(t *testing.T, n, w, h int) ([]Image, string) {
	t.Helper()
	dir := t.TempDir()
	tr, _, err := WriteSynth(context.Background(), dir, SynthOptions{N: n, W: w, H: h, Seed: 1, WithLR: true})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Discover(tr)
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.Images {
		if i%2 == 1 {
			l.Images[i].LRPath = ""
		}
	}
	masks := t.TempDir()
	writeMasks(t, masks, l.Images)
	return l.Images, masks
}

func batchesEqual(a, b *Batch) string {
	for _, f := range []struct {
		name string
		x, y []float32
	}{{"HR", a.HR, b.HR}, {"LR", a.LR, b.LR}, {"Up", a.Up, b.Up}, {"E", a.E, b.E}} {
		if len(f.x) != len(f.y) {
			return f.name + " length"
		}
		for i := range f.x {
			if math.Float32bits(f.x[i]) != math.Float32bits(f.y[i]) {
				return f.name
			}
		}
	}
	return ""
}

// TestPackShardsMatchesTileCache: batches cut from packed shards (read packed, and
// expanded to raw with the manifest's raw digest) equal the tile cache's bit for
// bit — HR, LR, up and E (from uint16 labels, both crops and means, reduce rule) —
// for several steps.
func TestPackShardsMatchesTileCache(t *testing.T) {
	ctx := context.Background()
	images, masks := packTestSet(t, 5, 128, 112)
	out := t.TempDir()
	m, st, err := PackShards(ctx, images, PackOptions{Out: out, TileSize: 64, TileThreshold: 32, MasksDir: masks, ShardBytes: 100_000, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Shards) < 3 || st.Built != len(m.Shards) || m.Images != 5 || m.Tiles != 5*4 || len(m.Skipped) != 0 || !m.Labels {
		t.Fatalf("manifest: %d shards, %d images, %d tiles, skipped %v; stats %+v", len(m.Shards), m.Images, m.Tiles, m.Skipped, st)
	}
	if got, err := ReadManifest(out); err != nil || got.Digest() != m.Digest() {
		t.Fatalf("manifest on disk: %v", err)
	}
	rawDir := t.TempDir()
	for _, s := range m.Shards {
		sum, n, err := ExpandShard(filepath.Join(out, ShardDir, s.Name), filepath.Join(rawDir, s.Name))
		if err != nil {
			t.Fatal(err)
		}
		if sum != s.RawSHA256 || n != s.RawBytes {
			t.Fatalf("shard %s expands to %s (%d bytes), manifest says %s (%d)", s.Name, sum, n, s.RawSHA256, s.RawBytes)
		}
		if psum, pn, _ := fsutil.FileSHA256(filepath.Join(out, ShardDir, s.Name)); psum != s.SHA256 || pn != s.Bytes {
			t.Fatalf("shard %s digest differs from the manifest", s.Name)
		}
	}
	for _, spe := range []maskgen.SPEOptions{
		{Mean: maskgen.MeanRegion, Crop: maskgen.CropAligned, ReduceSingleRegion: true},
		{Mean: maskgen.MeanImage, Crop: maskgen.CropReference, ReduceSingleRegion: true},
	} {
		spe.Scale = 4
		md, err := NewMaskDir(masks, images, spe, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, _, _, err := BuildCache(ctx, images, CacheOptions{Dir: t.TempDir(), TileSize: 64, TileThreshold: 32, Masks: md, Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		lo := LoaderOptions{Seed: 7, BatchSize: 6, PatchSize: 32, Reduce: true, NoPrefetch: true}
		want, err := NewLoader(c, lo)
		if err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{filepath.Join(out, ShardDir), rawDir} {
			set := openShardSet(t, m, dir, ShardSetOptions{Masks: true, SPE: spe})
			got, err := NewLoader(set, lo)
			if err != nil {
				t.Fatal(err)
			}
			nonZeroE := false
			for step := int64(0); step < 6; step++ {
				a, err := want.Batch(ctx, step, 0, 1)
				if err != nil {
					t.Fatal(err)
				}
				b, err := got.Batch(ctx, step, 0, 1)
				if err != nil {
					t.Fatal(err)
				}
				if f := batchesEqual(a, b); f != "" {
					t.Fatalf("%+v %s step %d: %s differs from the tile cache", spe, dir, step, f)
				}
				for _, v := range b.E {
					nonZeroE = nonZeroE || v != 0
				}
			}
			if !nonZeroE {
				t.Fatalf("%+v: every E was zero; the test compares nothing", spe)
			}
			set.Close()
		}
	}
}

func openShardSet(t *testing.T, m *Manifest, dir string, o ShardSetOptions) *ShardSet {
	t.Helper()
	set, err := NewShardSet(m, o)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range m.Shards {
		sh, err := OpenShard(filepath.Join(dir, s.Name))
		if err != nil {
			t.Fatal(err)
		}
		if err := set.Attach(i, sh); err != nil {
			t.Fatal(err)
		}
	}
	return set
}

// TestPackShardsSkipsBadImages: a PNG corrupt after its header and one that is not
// an image at all are listed by path and skipped; the rest is packed, and a second
// run keeps every shard and gives the same manifest.
func TestPackShardsSkipsBadImages(t *testing.T) {
	ctx := context.Background()
	images, _ := packTestSet(t, 5, 96, 96)
	b, err := os.ReadFile(images[1].HRPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := 120; i < len(b)-20; i++ {
		b[i] ^= 0x5a // header intact, pixel data garbage
	}
	os.WriteFile(images[1].HRPath, b, 0o644)
	os.WriteFile(images[3].HRPath, []byte("not an image"), 0o644)
	o := PackOptions{Out: t.TempDir(), TileSize: 64, TileThreshold: 32, ShardBytes: 40_000, Log: quietLog()}
	m, _, err := PackShards(ctx, images, o)
	if err != nil {
		t.Fatal(err)
	}
	if m.Images != 3 || len(m.Skipped) != 2 {
		t.Fatalf("packed %d images, skipped %v", m.Images, m.Skipped)
	}
	for _, bad := range []string{images[1].HRPath, images[3].HRPath} {
		found := false
		for _, p := range m.Skipped {
			found = found || (p.Path == bad && strings.Contains(p.Msg, "unreadable HR image"))
		}
		if !found {
			t.Errorf("%s not listed as skipped: %v", bad, m.Skipped)
		}
	}
	for _, s := range m.Shards {
		for _, im := range s.Images {
			if im.ID == images[1].ID || im.ID == images[3].ID {
				t.Errorf("bad image %s packed in %s", im.ID, s.Name)
			}
		}
	}
	again, st, err := PackShards(ctx, images, o)
	if err != nil {
		t.Fatal(err)
	}
	if st.Built != 0 || again.Digest() != m.Digest() {
		t.Fatalf("second pack rebuilt %d shards; manifests equal: %v", st.Built, again.Digest() == m.Digest())
	}
	// A changed source makes its shard rebuild, and only that one.
	if err := SavePNG(images[4].HRPath, Synth(1234, 96, 96)); err != nil {
		t.Fatal(err)
	}
	third, st, err := PackShards(ctx, images, o)
	if err != nil {
		t.Fatal(err)
	}
	if st.Built != 1 || third.Digest() == m.Digest() {
		t.Fatalf("after changing one image: rebuilt %d shards (want 1), manifest changed: %v", st.Built, third.Digest() != m.Digest())
	}
}

// TestPackShardsKilledAndRestarted: a pack killed with SIGKILL midway and run again
// finishes with byte for byte the manifest of an uninterrupted pack, reusing the
// shards finished before the kill.
func TestPackShardsKilledAndRestarted(t *testing.T) {
	if os.Getenv("SAMDIFFSR_PACK_CHILD") != "" {
		return
	}
	ctx := context.Background()
	images, masks := packTestSet(t, 8, 96, 96)
	o := PackOptions{TileSize: 64, TileThreshold: 32, MasksDir: masks, ShardBytes: 60_000, Workers: 1, Log: quietLog()}
	o.Out = t.TempDir()
	m, _, err := PackShards(ctx, images, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Shards) < 4 {
		t.Fatalf("only %d shards", len(m.Shards))
	}
	killed := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestPackShardsChild$")
	cmd.Env = append(os.Environ(), "SAMDIFFSR_PACK_CHILD="+killed, "SAMDIFFSR_PACK_MASKS="+masks, "SAMDIFFSR_PACK_ROOT="+filepath.Dir(images[0].HRPath))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for done := 0; done < 2; done = countShards(filepath.Join(killed, ShardDir)) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the child pack wrote no shards in 60 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	done := countShards(filepath.Join(killed, ShardDir))
	if done >= len(m.Shards) {
		t.Fatalf("the child finished all %d shards before the kill; the test proves nothing", done)
	}
	if _, err := os.Stat(filepath.Join(killed, ManifestFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("killed pack left a manifest: %v", err)
	}
	o.Out = killed
	again, st, err := PackShards(ctx, images, o)
	if err != nil {
		t.Fatal(err)
	}
	if st.Built != len(m.Shards)-done {
		t.Errorf("restart built %d shards, want %d (%d were finished before the kill)", st.Built, len(m.Shards)-done, done)
	}
	a, _ := os.ReadFile(filepath.Join(o.Out, ManifestFile))
	b, _ := os.ReadFile(filepath.Join(killed, ManifestFile))
	if again.Digest() != m.Digest() || !bytes.Equal(a, b) {
		t.Fatalf("restarted pack's manifest differs from the uninterrupted one")
	}
	t.Logf("killed after %d of %d shards", done, len(m.Shards))
}

// TestPackShardsChild is the pack TestPackShardsKilledAndRestarted kills: slowed
// down per image so the kill lands midway.
func TestPackShardsChild(t *testing.T) {
	out := os.Getenv("SAMDIFFSR_PACK_CHILD")
	if out == "" {
		t.Skip("run by TestPackShardsKilledAndRestarted")
	}
	l, err := Discover(os.Getenv("SAMDIFFSR_PACK_ROOT"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.Images {
		if i%2 == 1 {
			l.Images[i].LRPath = ""
		}
	}
	PackShards(context.Background(), l.Images, PackOptions{Out: out, TileSize: 64, TileThreshold: 32, MasksDir: os.Getenv("SAMDIFFSR_PACK_MASKS"),
		ShardBytes: 60_000, Workers: 1, Log: quietLog(), OnImage: func(string) { time.Sleep(150 * time.Millisecond) }})
}

// countShards counts the finished shard files in dir.
func countShards(dir string) int {
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "shard-") {
			n++
		}
	}
	return n
}
