package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAcquire(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lock")
	ex, err := Acquire(ctx, path, Exclusive, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A second exclusive holder (another open file, as another process
	// has) is refused, naming the first.
	_, err = Acquire(ctx, path, Exclusive, false, nil)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("second exclusive Acquire = %v; want ErrBusy naming pid %d", err, os.Getpid())
	}
	if _, err := Acquire(ctx, path, Shared, false, nil); !errors.Is(err, ErrBusy) {
		t.Errorf("shared Acquire while held exclusively = %v; want ErrBusy", err)
	}
	// Waiting: the lock comes free while a waiter waits.
	waited := make(chan string, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		ex.Unlock()
	}()
	l, err := Acquire(ctx, path, Exclusive, true, func(h string) { waited <- h })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-waited:
		if !strings.Contains(h, "pid ") {
			t.Errorf("onWait holder = %q", h)
		}
	default:
		t.Error("Acquire(wait) did not report the wait")
	}
	l.Unlock()

	// Shared holders coexist and keep an exclusive one out.
	s1, err := Acquire(ctx, path, Shared, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Acquire(ctx, path, Shared, false, nil)
	if err != nil {
		t.Fatalf("second shared Acquire: %v", err)
	}
	if _, err := Acquire(ctx, path, Exclusive, false, nil); !errors.Is(err, ErrBusy) {
		t.Errorf("exclusive Acquire while shared = %v; want ErrBusy", err)
	}
	s1.Unlock()
	s2.Unlock()

	// A cancelled wait returns the context's error.
	hold, _ := Acquire(ctx, path, Exclusive, false, nil)
	defer hold.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	if _, err := Acquire(cctx, path, Exclusive, true, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled Acquire = %v", err)
	}
}

// TestAcquireNamesAHolderThatHasNotWrittenYet: between taking the lock
// and writing its pid, a holder's lock file is empty (TestConcurrentBuilds
// in builder once read it in that instant and said "holder unknown"). A
// refused Acquire waits a moment for the name.
func TestAcquireNamesAHolderThatHasNotWrittenYet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ok, err := Try(f, Exclusive); !ok || err != nil {
		t.Fatalf("Try = %v, %v", ok, err)
	}
	// The holder took the lock; its name comes a little later.
	written := make(chan struct{})
	go func() {
		defer close(written)
		time.Sleep(3 * holderWriteWait)
		writeHolder(f)
	}()
	_, err = Acquire(context.Background(), path, Exclusive, false, nil)
	<-written
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("Acquire while the holder writes its name = %v; want ErrBusy naming pid %d", err, os.Getpid())
	}
}

// TestAcquireReadOnly: a lock file in a directory that cannot be written
// still locks.
func TestAcquireReadOnly(t *testing.T) {
	if os.Getuid() == 0 {
		// root writes read-only directories; the read-only open is still
		// exercised by a read-only file.
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "lock")
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o755)
	l, err := Acquire(context.Background(), path, Exclusive, false, nil)
	if err != nil {
		t.Fatalf("Acquire on a read-only lock file: %v", err)
	}
	l.Unlock()
}
