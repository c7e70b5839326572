//go:build !openblas

package model

// blasName is fixed at init: which sgemm implementation blas32 dispatches to.
// Without the openblas build tag it is gonum's pure-Go BLAS (about 10x slower).
const blasName = "gonum (pure Go; build with -tags openblas and CGO_LDFLAGS=-lopenblas for OpenBLAS)"

// blasSplit is false: gonum's Sgemm already splits work over goroutines.
const blasSplit = false

// blasAdvice is empty: there is nothing to tune in the pure-Go BLAS.
const blasAdvice = ""
