package samonnx

import (
	"strconv"
	"strings"
)

// versionAtLeast compares dotted versions numerically ("1.30.0" >= "1.24").
// An unparsable version counts as new enough: the C API check already passed.
func versionAtLeast(have, need string) bool {
	h, n := strings.Split(have, "."), strings.Split(need, ".")
	for i := range n {
		nv, err := strconv.Atoi(n[i])
		if err != nil {
			return true
		}
		if i >= len(h) {
			return nv == 0
		}
		hv, err := strconv.Atoi(h[i])
		if err != nil {
			return true
		}
		if hv != nv {
			return hv > nv
		}
	}
	return true
}
