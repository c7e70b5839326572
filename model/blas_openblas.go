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

	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/netlib/blas/netlib"
)

// blasName is fixed at init: which sgemm implementation blas32 dispatches to.
var blasName string

// blasSplit tells CPU.Gemm to split large products over goroutines itself.
const blasSplit = true

func init() {
	blas32.Use(netlib.Implementation{})
	// OpenBLAS runs single-threaded and CPU.Gemm splits each large product over
	// GOMAXPROCS goroutines itself: OpenBLAS's own worker threads spin after every
	// call and would compete with the Go kernels (im2col, Mish) that run between
	// gemm calls.
	C.openblas_set_num_threads(1)
	blasName = fmt.Sprintf("OpenBLAS (%s, core %s, single-threaded per call, %d goroutines)", C.GoString(C.openblas_get_config()), C.GoString(C.openblas_get_corename()), runtime.GOMAXPROCS(0))
}
