package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// TestScriptsCheck runs shellcheck on the e2e harness's shell scripts
// (mkrootfs.sh and the stand-ins), in make test: a mistake in a stand-in
// otherwise shows only after a look-alike build and a boot under QEMU.
func TestScriptsCheck(t *testing.T) {
	var scripts []string
	err := filepath.WalkDir("../../testdata/e2e", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.HasPrefix(b, []byte("#!/bin/sh")) {
			scripts = append(scripts, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) < 10 {
		t.Fatalf("found %d shell scripts under testdata/e2e: %v", len(scripts), scripts)
	}
	out, err := testimage.Run(t, "shellcheck", append([]string{"-s", "sh", "-x"}, scripts...)...)
	if err != nil {
		t.Errorf("shellcheck %s: %v\n%s", strings.Join(scripts, " "), err, out)
	}
}
