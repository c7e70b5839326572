//go:build openblas

package model

/*
extern void openblas_set_num_threads(int num_threads);
extern int openblas_get_num_threads(void);
extern char* openblas_get_config(void);
extern char* openblas_get_corename(void);
*/
import "C"

import (
	"fmt"
	"runtime"
	"strings"

	"golang.org/x/sys/cpu"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/netlib/blas/netlib"
)

// blasName is fixed at init: which sgemm implementation blas32 dispatches to.
var blasName string

// blasAdvice is set at init when OpenBLAS picked a pre-AVX2 kernel on a CPU that
// has AVX2/AVX-512 (OpenBLAS 0.3.21 does this for CPU models it does not know).
var blasAdvice string

// blasSplit tells CPU.Gemm to split large products over goroutines itself.
const blasSplit = true

func init() {
	blas32.Use(netlib.Implementation{})
	// OpenBLAS runs single-threaded and CPU.Gemm splits each large product over
	// GOMAXPROCS goroutines itself: OpenBLAS's own worker threads spin after every
	// call and would compete with the Go kernels (im2col, Mish) that run between
	// gemm calls.
	C.openblas_set_num_threads(1)
	core := C.GoString(C.openblas_get_corename())
	switch strings.ToLower(core) {
	case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine", "northwood", "banias", "sandybridge":
		want := ""
		switch {
		case cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VL:
			want = "SkylakeX"
		case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
			want = "Haswell"
		}
		if want != "" {
			blasAdvice = fmt.Sprintf("OpenBLAS chose its %s kernels on a CPU with %s; export OPENBLAS_CORETYPE=%s before starting for several times faster sgemm", core, map[string]string{"SkylakeX": "AVX-512", "Haswell": "AVX2"}[want], want)
		}
	}
	blasName = fmt.Sprintf("OpenBLAS (%s, core %s, single-threaded per call, %d goroutines)", C.GoString(C.openblas_get_config()), core, runtime.GOMAXPROCS(0))
}
