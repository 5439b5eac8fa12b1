package outdir

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestDescribeWriteError(t *testing.T) {
	err := DescribeWriteError("out", &os.PathError{Op: "write", Path: "out/a.img", Err: syscall.ENOSPC})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "the disk holding out is full") {
		t.Errorf("describeWriteError = %v", err)
	}
}
