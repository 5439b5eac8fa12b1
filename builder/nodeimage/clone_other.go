//go:build !linux

package nodeimage

import (
	"errors"
	"os"
)

func reflink(dst, src *os.File) error { return errors.ErrUnsupported }

func copyRange(dst, src *os.File, off, n int64) error { return errNoCopyRange }

func copyRangeTo(dst *os.File, dstOff int64, src *os.File, srcOff, n int64) error {
	return errNoCopyRange
}

func startWriteback(f *os.File, off, n int64) {}
