package buildtest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/pibake/pibake/builder/outdir/seam"
)

// ErrCrashed is what every step after the crash point returns.
var ErrCrashed = errors.New("crashed here (test)")

// CrashFS is an output directory's FS that does the first After steps and
// then nothing: every later step fails with ErrCrashed and changes
// nothing, as if the process had been killed after step After (a kill -9
// leaves the page cache, so what was written stays). With After < 0 it
// never crashes and only counts. Steps records every step asked for.
type CrashFS struct {
	After int
	// BeforeStep, when set, is called before each step with how many
	// steps are done, while no other step can start: what the directory
	// holds then is what a kill -9 after that many steps leaves.
	BeforeStep func(done int)

	mu    sync.Mutex
	steps []string
}

// NewCrashFS crashes after step after (< 0: never).
func NewCrashFS(after int) *CrashFS { return &CrashFS{After: after} }

// Steps are the steps asked for so far, the crashed ones included.
func (c *CrashFS) Steps() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.steps...)
}

// Done is how many steps were done (not crashed).
func (c *CrashFS) Done() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.After >= 0 && len(c.steps) > c.After {
		return c.After
	}
	return len(c.steps)
}

// step numbers a step and says whether it may happen.
func (c *CrashFS) step(op, name string, more ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	what := op + " " + filepath.Base(name)
	for _, m := range more {
		what += " " + filepath.Base(m)
	}
	if c.BeforeStep != nil && (c.After < 0 || len(c.steps) < c.After) {
		c.BeforeStep(len(c.steps))
	}
	c.steps = append(c.steps, what)
	if c.After >= 0 && len(c.steps) > c.After {
		return fmt.Errorf("%s: %w", what, ErrCrashed)
	}
	return nil
}

// WriteFile implements seam.FS.
func (c *CrashFS) WriteFile(name string, data []byte, perm fs.FileMode) error {
	if err := c.step("write", name); err != nil {
		return err
	}
	return seam.OS{}.WriteFile(name, data, perm)
}

// Create implements seam.FS.
func (c *CrashFS) Create(name string, perm fs.FileMode) (*os.File, error) {
	if err := c.step("create", name); err != nil {
		return nil, err
	}
	return seam.OS{}.Create(name, perm)
}

// Link implements seam.FS.
func (c *CrashFS) Link(existing, name string) error {
	if err := c.step("link", name); err != nil {
		return err
	}
	return seam.OS{}.Link(existing, name)
}

// Sync implements seam.FS.
func (c *CrashFS) Sync(name string) error {
	if err := c.step("fsync", name); err != nil {
		return err
	}
	return seam.OS{}.Sync(name)
}

// Rename implements seam.FS.
func (c *CrashFS) Rename(from, to string) error {
	if err := c.step("rename", from, to); err != nil {
		return err
	}
	return seam.OS{}.Rename(from, to)
}

// Remove implements seam.FS.
func (c *CrashFS) Remove(name string) error {
	if err := c.step("unlink", name); err != nil {
		return err
	}
	return seam.OS{}.Remove(name)
}

// RemoveAll implements seam.FS.
func (c *CrashFS) RemoveAll(name string) error {
	if err := c.step("remove-all", name); err != nil {
		return err
	}
	return seam.OS{}.RemoveAll(name)
}

// Mkdir implements seam.FS.
func (c *CrashFS) Mkdir(name string, perm fs.FileMode) error {
	if err := c.step("mkdir", name); err != nil {
		return err
	}
	return seam.OS{}.Mkdir(name, perm)
}

// SyncDir implements seam.FS.
func (c *CrashFS) SyncDir(dir string) error {
	if err := c.step("dirsync", dir); err != nil {
		return err
	}
	return seam.OS{}.SyncDir(dir)
}
