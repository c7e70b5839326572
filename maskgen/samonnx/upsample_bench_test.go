package samonnx

import "testing"

// BenchmarkStats measures the per-mask work of the IoU-surviving masks (stability
// counts and box from the upscaled logits) for a 2040x1356 image.
func BenchmarkStats(b *testing.B) {
	f := newFrame(2040, 1356)
	sc := f.newScratch()
	for _, name := range []string{"box", "soft disc", "noise", "all below"} {
		l := fullGrid(testFields()[name])
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				f.stats(&l, 0, 1, sc)
			}
		})
	}
}

// BenchmarkPaint measures painting one kept mask into a 2040x1356 label map.
func BenchmarkPaint(b *testing.B) {
	f := newFrame(2040, 1356)
	sc := f.newScratch()
	dst := make([]uint16, 2040*1356)
	for _, name := range []string{"box", "soft disc"} {
		full := fullGrid(testFields()[name])
		st := f.stats(&full, 0, 1, sc)
		l := f.keepGrid(&full, st.keep)
		done := f.doneMarks()
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				clear(dst)
				clear(done)
				f.paint(&l, st.keep, 0, 1, dst, 0, 1356, done, sc)
			}
		})
	}
}
