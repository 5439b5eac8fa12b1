//go:build unix

package recipes

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// TestLoadReadsNoMoreThanTheCap: a recipe that never ends (a pipe fed
// forever, as an image or a device given by mistake would be in effect)
// is refused as too large once the cap is passed, instead of being read
// into memory to the end.
func TestLoadReadsNoMoreThanTheCap(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "endless.hcl")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer w.Close()
		line := []byte("# " + strings.Repeat("x", 1000) + "\n")
		for {
			if _, err := w.Write(line); err != nil {
				return // the reader has gone: EPIPE
			}
		}
	}()
	type result struct {
		r     *Recipe
		diags hcl.Diagnostics
	}
	done := make(chan result, 1)
	go func() {
		r, diags := Load(hclparse.NewParser(), fifo)
		done <- result{r, diags}
	}()
	select {
	case res := <-done:
		if res.r != nil || !strings.Contains(res.diags.Error(), "Recipe too large") {
			t.Errorf("an endless recipe: want Recipe too large, got %v", res.diags)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Load is still reading an endless recipe")
	}
}
