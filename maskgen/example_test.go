package maskgen_test

import (
	"fmt"

	"github.com/samdiffsr/samdiffsr/maskgen"
)

// A 2x2 label map: region 1 fills the top row, region 2 the bottom-left pixel, and the
// bottom-right pixel is in no region. R = [1 1; cos1-sin1 cos1+sin1].
func ExampleNewEncoder() {
	m := maskgen.NewLabelMap(2, 2)
	copy(m.Labels, []uint16{1, 1, 2, 0})
	m.Regions = 2
	for _, mean := range []string{maskgen.MeanRegion, maskgen.MeanImage} {
		enc, err := maskgen.NewEncoder(m, maskgen.SPEOptions{Mean: mean, Crop: maskgen.CropAligned})
		if err != nil {
			fmt.Println(err)
			return
		}
		e := make([]float32, 4)
		enc.Patch(0, 0, 2, 2, e)
		fmt.Printf("%s: %.4f\n", mean, e)
	}
	// Output:
	// region: [1.0000 1.0000 -0.3012 0.0000]
	// image: [0.5000 0.5000 -0.0753 0.0000]
}
