//go:build !linux

package maskgen

// adviseHugePages is a no-op where transparent huge pages are not available.
func adviseHugePages[T any](buf []T) {}
