//go:build cgo

package samonnx

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is the calling thread's CPU time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}

// BenchmarkSegment2040x1356 runs the whole generator (SAM defaults: 32x32 grid,
// batches of 64) on a 2040x1356 image with the stand-in models and reports the time
// per image of each phase: preprocess (resize, normalise), encoder and decoder (the
// models), filter (IoU filter, upscaling for the stability score, mask box), nms and
// paint (upscaling and painting the kept masks), as CPU time of the threads that run
// them, summed over goroutines (ONNX Runtime's own threads excepted: the decoder
// runs single-threaded on the calling thread, the encoder's extra threads are not
// counted). The generator's own overhead is preprocess + filter + nms + paint.
func BenchmarkSegment2040x1356(b *testing.B) {
	for _, c := range []struct {
		name    string
		batched bool
	}{{"decoder=batch64", true}, {"decoder=batch1", false}} {
		b.Run(c.name, func(b *testing.B) {
			if !c.batched && os.Getenv("SAMONNX_BENCH_BATCH1") == "" {
				b.Skip("the batch-1 decoder (SAM's export shape, 1024 runs with its 1024x1024 mask upsampling) takes about 15 s of CPU per image; set SAMONNX_BENCH_BATCH1=1 to run it")
			}
			s, err := New(standinConfig(b, c.batched))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			img := testImage(2040, 1356)
			if _, err := s.Segment(context.Background(), img); err != nil { // warm up
				b.Fatal(err)
			}
			// Thread CPU time: the machine may be shared, and CPU time is what the
			// overhead costs. Phases run on pinned threads.
			s.times = &phaseTimes{clock: threadCPU}
			defer s.times.pin()()
			regions := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				lm, err := s.Segment(context.Background(), img)
				if err != nil {
					b.Fatal(err)
				}
				regions = lm.Regions
			}
			b.StopTimer()
			t := s.times.d
			per := func(d time.Duration) float64 { return float64(d.Milliseconds()) / float64(b.N) }
			b.ReportMetric(per(t[phasePreprocess]), "preprocess-ms")
			b.ReportMetric(per(t[phaseEncoder]), "encoder-ms")
			b.ReportMetric(per(t[phaseDecoder]), "decoder-ms")
			b.ReportMetric(per(t[phaseFilter]), "filter-ms")
			b.ReportMetric(per(t[phaseNMS]), "nms-ms")
			b.ReportMetric(per(t[phasePaint]), "paint-ms")
			b.ReportMetric(per(t[phasePreprocess]+t[phaseFilter]+t[phaseNMS]+t[phasePaint]), "overhead-ms")
			b.ReportMetric(float64(regions), "regions")
		})
	}
}
