package summary

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/internal/golden"
)

// TestBuildSummary: after Ctrl-C the summary says "interrupted", never
// "context canceled", and FILE names the image from before that stays
// published; stdout lists only the images this run's nodes have, built
// or unchanged. The results are those builder's TestBuildInterrupted
// checks a real interrupted build returns.
func TestBuildSummary(t *testing.T) {
	canceled := fmt.Errorf("copy base image: %w", context.Canceled)
	results := []builder.NodeResult{
		{Hostname: "pi-server", Role: "server", Status: builder.StatusBuilt, File: "out/pi-server.img", Size: 3 << 30, SHA256: "0123456789abcdef0123"},
		{Hostname: "pi-agent-1", Role: "agent", Status: builder.StatusUnchanged, File: "out/pi-agent-1.img", XZ: "out/pi-agent-1.img.xz", Size: 3 << 30, SHA256: "89abcdef0123456789ab"},
		{Hostname: "pi-agent-2", Role: "agent", Status: builder.StatusInterrupted, Err: canceled, File: "out/pi-agent-2.img", Size: 3 << 30, SHA256: "fedcba9876543210fedc"},
		{Hostname: "pi-agent-3", Role: "agent", Status: builder.StatusInterrupted, Err: canceled},
		{Hostname: "pi-agent-4", Role: "agent", Status: builder.StatusFailed, Err: errors.New("write boot partition: no space left on device"), File: "out/pi-agent-4.img", Size: 3 << 30, SHA256: "00112233445566778899"},
		{Hostname: "old", Role: "agent", Status: builder.StatusOrphan, File: "out/old.img", Size: 3 << 30, SHA256: "aabbccddeeff00112233"},
	}
	var stdout, stderr bytes.Buffer
	BuildTable(&stderr, results)
	BuildPaths(&stdout, results)
	golden.Compare(t, filepath.Join("testdata", "build_summary.stderr"), stderr.Bytes())
	golden.Compare(t, filepath.Join("testdata", "build_summary.stdout"), stdout.Bytes())
	if bytes.Contains(stderr.Bytes(), []byte("context canceled")) {
		t.Errorf("the summary says context canceled:\n%s", stderr.Bytes())
	}
}
