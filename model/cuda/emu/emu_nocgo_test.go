//go:build !cgo

package emu

import "testing"

func TestKernels(t *testing.T) { t.Skip("host kernel emulation needs cgo") }
