//go:build !windows

package base

import (
	"os"
	"syscall"
	"testing"
)

func diskUsage(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}
