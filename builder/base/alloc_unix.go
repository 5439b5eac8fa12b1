//go:build !windows

package base

import (
	"io/fs"
	"syscall"
)

// allocated is what a file takes on disk: images are sparse, and their
// apparent size says little about the space pruning frees.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
