package diskimg

import (
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// Shorthands for the independent checks, by partition.

func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	return testimage.Run(t, name, args...)
}

func fsckFAT(t *testing.T, img string, p Partition) {
	t.Helper()
	testimage.FsckFAT(t, img, p.Offset(), p.Size())
}

func e2fsckRoot(t *testing.T, img string, p Partition) {
	t.Helper()
	testimage.E2fsck(t, img, p.Offset())
}

func mtype(t *testing.T, img string, p Partition, name string) string {
	t.Helper()
	return testimage.Mtype(t, img, p.Offset(), name)
}
