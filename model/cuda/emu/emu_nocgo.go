//go:build !cgo

package emu

// Available reports whether the host emulation is compiled in (it needs cgo).
const Available = false
