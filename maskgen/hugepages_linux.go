package maskgen

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// adviseHugePages asks the kernel to back a large buffer with transparent huge pages
// (where THP is in "madvise" mode). The segmenter's union-find and edge arrays are
// accessed at random over tens of MB; 2 MiB pages spare most TLB misses. Advice only:
// errors are ignored.
func adviseHugePages[T any](buf []T) {
	n := uintptr(cap(buf)) * unsafe.Sizeof(*new(T))
	if n < 4<<20 {
		return
	}
	// Large Go allocations are page-aligned, as madvise requires; the kernel uses huge
	// pages for the 2 MiB-aligned parts of the range.
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(buf[:cap(buf)]))), n)
	unix.Madvise(b, unix.MADV_HUGEPAGE)
}
