//go:build openblas

package model

/*
extern void openblas_set_num_threads(int num_threads);
extern int openblas_get_num_threads(void);
extern char* openblas_get_config(void);
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

func init() {
	blas32.Use(netlib.Implementation{})
	// One OpenBLAS thread per usable core: gemm runs alone (im2col/col2im and the
	// elementwise kernels run between gemm calls, never during one), so the two
	// never oversubscribe the cores.
	C.openblas_set_num_threads(C.int(runtime.GOMAXPROCS(0)))
	blasName = fmt.Sprintf("OpenBLAS (%s, %d threads)", C.GoString(C.openblas_get_config()), int(C.openblas_get_num_threads()))
}
