// Package flock takes advisory locks on files, shared or exclusive, which
// the operating system releases when the process ends however it ends (a
// kill -9 leaves no stale lock behind). A lock file also names its holder,
// so that a process that cannot get the lock can say who has it.
package flock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Mode is how a lock is held.
type Mode int

// Lock modes: any number of shared holders, or one exclusive holder.
const (
	Shared Mode = iota + 1
	Exclusive
)

// ErrBusy is returned (wrapped, with the holder) when a lock is held by
// another process and the caller asked not to wait.
var ErrBusy = errors.New("locked by another process")

// Lock is a held lock; Unlock releases it.
type Lock struct {
	f *os.File
}

// Try locks f without waiting; false means someone else holds a
// conflicting lock.
func Try(f *os.File, m Mode) (bool, error) { return tryLock(f, m) }

// Unlock releases a lock taken with Try.
func Unlock(f *os.File) error { return unlock(f) }

// Acquire locks the file at path (created if missing), waiting while
// another process holds a conflicting lock when wait is true, else failing
// at once with ErrBusy and the holder. onWait, if set, is called once when
// the wait starts. An exclusive holder writes its pid into the file.
func Acquire(ctx context.Context, path string, m Mode, wait bool, onWait func(holder string)) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if errors.Is(err, os.ErrPermission) || isReadOnly(err) {
		// A read-only directory or file: a lock on a read-only open is
		// just as good, it only cannot say who holds it.
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, err
	}
	unnamed := 0
	for waited := false; ; waited = true {
		ok, err := tryLock(f, m)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if ok {
			if m == Exclusive {
				writeHolder(f)
			}
			return &Lock{f: f}, nil
		}
		holder := Holder(path)
		if !wait && holder == unknownHolder && unnamed < holderWriteTries {
			// The holder writes its name just after it takes the lock
			// (and, taking it again, truncates the file first): a moment
			// later the file names it, or the lock is free.
			unnamed++
			select {
			case <-ctx.Done():
				f.Close()
				return nil, ctx.Err()
			case <-time.After(holderWriteWait):
			}
			continue
		}
		if !wait {
			f.Close()
			return nil, fmt.Errorf("%s: %w (%s)", path, ErrBusy, holder)
		}
		if !waited && onWait != nil {
			onWait(holder)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	unlock(l.f)
	err := l.f.Close()
	l.f = nil
	return err
}

// unknownHolder is what Holder says when the file names nobody: a shared
// holder, a read-only lock file, or an exclusive holder that has not yet
// written its name.
const unknownHolder = "holder unknown"

// How long a refused Acquire waits for the holder's name: tries × wait.
const (
	holderWriteTries = 20
	holderWriteWait  = 10 * time.Millisecond
)

// Holder describes who last held the lock exclusively, from the file.
func Holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return unknownHolder
	}
	return strings.TrimSpace(string(b))
}

func writeHolder(f *os.File) {
	host, _ := os.Hostname()
	if f.Truncate(0) == nil {
		f.WriteAt([]byte(fmt.Sprintf("pid %d on %s\n", os.Getpid(), host)), 0)
	}
	f.Seek(0, io.SeekStart)
}
