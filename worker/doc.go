// Package worker runs the tasks of samdiffsr: the per-image mask task and the local
// mask farm (masktask.go), the distributed mask farm over NATS (farm_*.go), the
// training loop with its Collective seam for data-parallel ranks (train*.go), tiled
// super-resolution (sr*.go) and evaluation (eval*.go).
//
// Both the single-machine commands (`samdiffsr masks`, `train`, `sr`, `eval`) and the
// cluster worker (`samdiffsr worker`, `samdiffsr run`) call the same functions, so a
// result does not depend on where it was computed.
package worker
