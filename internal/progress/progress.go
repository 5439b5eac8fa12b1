// Package progress carries how far long work has come (a download, a
// decompression, a node's image) from where the work is done to the
// command line, which draws it. The work only counts bytes.
package progress

import (
	"sync/atomic"
	"time"
)

// Func receives a task's progress: done of total bytes. It is called from
// several goroutines, at most every Interval per task, and once with
// done == total when the task ends. A nil Func receives nothing.
type Func func(task string, done, total int64)

// Interval is the least time between two reports of one task.
const Interval = 100 * time.Millisecond

// Counter counts one task's bytes and reports them to a Func.
type Counter struct {
	f          Func
	task       string
	total      int64
	done, last atomic.Int64 // last: when it last reported, in ns
}

// New starts a task of total bytes; nil when f is nil, which every method
// accepts.
func New(f Func, task string, total int64) *Counter {
	if f == nil {
		return nil
	}
	c := &Counter{f: f, task: task, total: total}
	f(task, 0, total)
	return c
}

// Add counts n more bytes done.
func (c *Counter) Add(n int64) {
	if c == nil {
		return
	}
	done := c.done.Add(n)
	now := time.Now().UnixNano()
	if last := c.last.Load(); now-last >= int64(Interval) && c.last.CompareAndSwap(last, now) {
		c.f(c.task, min(done, c.total), c.total)
	}
}

// Set says how many bytes are done in all.
func (c *Counter) Set(done int64) {
	if c == nil {
		return
	}
	c.Add(done - c.done.Load())
}

// Finish reports the task complete.
func (c *Counter) Finish() {
	if c == nil {
		return
	}
	c.f(c.task, c.total, c.total)
}
