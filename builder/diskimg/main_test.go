package diskimg

import (
	"os"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// TestMain removes the test images built for this package.
func TestMain(m *testing.M) {
	code := m.Run()
	testimage.Cleanup()
	os.Exit(code)
}
