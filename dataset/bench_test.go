package dataset

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

// photos returns the DIV2K-size photos of ../shared/data/photos, skipping when absent.
func photos(b *testing.B) []Image {
	b.Helper()
	paths, _ := filepath.Glob(filepath.Join("..", "..", "shared", "data", "photos", "*_2040.png"))
	if len(paths) == 0 {
		b.Skip("no ../../shared/data/photos/*_2040.png (DIV2K-size photos); skipping")
	}
	var out []Image
	for _, p := range paths {
		stem := strings.TrimSuffix(filepath.Base(p), ".png")
		out = append(out, Image{ID: stem, Set: SetPlain, HRPath: p})
	}
	return out
}

// benchMasks writes a blocky label map (97 px cells, so patches straddle regions) per image.
func benchMasks(b *testing.B, images []Image) string {
	dir := b.TempDir()
	for _, im := range images {
		w, h, err := ImageSize(im.HRPath)
		if err != nil {
			b.Fatal(err)
		}
		m := maskgen.NewLabelMap(w, h)
		cols := (w + 96) / 97
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				m.Labels[y*w+x] = uint16((y/97)*cols + x/97 + 1)
			}
		}
		m.Regions = int(m.Labels[len(m.Labels)-1])
		if err := maskgen.WriteLabelMap(MaskPath(dir, im.ID), m, nil); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

func benchPackOptions(b *testing.B, images []Image, maskDir string) CacheOptions {
	md, err := NewMaskDir(maskDir, images, maskgen.SPEOptions{Mean: "region", Crop: "aligned", ReduceSingleRegion: true, Scale: 4}, 0)
	if err != nil {
		b.Fatal(err)
	}
	return CacheOptions{Dir: b.TempDir(), TileSize: 320, TileThreshold: 160, Masks: md, Log: slog.New(slog.DiscardHandler)}
}

// BenchmarkPackDIV2KSize is the one-time cost per DIV2K-size image: PNG decode, LR by
// the MATLAB bicubic, tiling, E of every tile, tile file writes (2 images in parallel).
func BenchmarkPackDIV2KSize(b *testing.B) {
	images := photos(b)
	maskDir := benchMasks(b, images)
	var total time.Duration
	n := 0
	for b.Loop() {
		o := benchPackOptions(b, images, maskDir)
		start := time.Now()
		c, _, probs, err := BuildCache(context.Background(), images, o)
		if err != nil || len(probs) > 0 {
			b.Fatal(err, probs)
		}
		total += time.Since(start)
		n += len(images)
		c.Close()
	}
	b.ReportMetric(total.Seconds()/float64(n), "s/image")
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDecodePNG2040 is the PNG decode alone (one core).
func BenchmarkDecodePNG2040(b *testing.B) {
	images := photos(b)
	for b.Loop() {
		if _, err := LoadRGB(images[0].HRPath); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoaderDIV2KSize is the steady-state delivery of training patches
// (160x160 HR + 40x40 LR + E + up) by the Loader from the packed cache, batch 16,
// world 1, with prefetching, on GOMAXPROCS cores.
func BenchmarkLoaderDIV2KSize(b *testing.B) {
	images := photos(b)
	o := benchPackOptions(b, images, benchMasks(b, images))
	c, _, _, err := BuildCache(context.Background(), images, o)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, bs := range []int{16, 64} {
		b.Run(fmt.Sprintf("batch%d", bs), func(b *testing.B) {
			ld, err := NewLoader(c, LoaderOptions{Seed: 1, BatchSize: bs, PatchSize: 160, Reduce: true})
			if err != nil {
				b.Fatal(err)
			}
			defer ld.Close()
			ctx := context.Background()
			// Warm up: touch (and checksum) every tile once.
			for i := range c.Tiles {
				if _, err := c.Tile(i); err != nil {
					b.Fatal(err)
				}
			}
			step := int64(0)
			cpu0 := cpuTime()
			start := time.Now()
			for b.Loop() {
				bt, err := ld.Batch(ctx, step, 0, 1)
				if err != nil {
					b.Fatal(err)
				}
				ld.Recycle(bt)
				step++
			}
			patches := float64(step * int64(bs))
			b.ReportMetric(patches/time.Since(start).Seconds(), "patches/s")
			// CPU time per patch does not depend on other load on the machine.
			b.ReportMetric((cpuTime()-cpu0).Seconds()*1e3/patches, "cpu-ms/patch")
		})
	}
}
