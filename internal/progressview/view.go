// Package progressview draws how far long work has come (the download,
// the decompression, each node's image and .img.xz) for the command line:
// a bar per running task on a terminal, with log lines scrolling above
// them ([mpb]); elsewhere the download and the decompression as a line at
// every quarter, for CI logs.
//
// [mpb]: https://github.com/vbauerster/mpb
package progressview

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/pibake/pibake/internal/bytesize"
	"github.com/pibake/pibake/internal/progress"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// View shows long work: a bar per running task on a terminal, with the
// log lines scrolling above them; elsewhere the download and the
// decompression as a line at every quarter.
type View struct {
	mu      sync.Mutex
	stderr  io.Writer
	bars    *mpb.Progress // nil: not a terminal
	running map[string]*mpb.Bar
	// finished are the tasks whose bar completed: a report that raced in
	// behind the final one must not draw a bar that never completes.
	finished map[string]bool
	quarter  map[string]int64
	// refresh drives the bars' redraws (mpb.WithManualRefresh): mpb
	// prints a log line written with bars.Write only at the next redraw,
	// and at shutdown it redraws only when a bar changed, so a line
	// logged after the last bar went away would be lost. stop sends a last
	// refresh of its own before shutting down.
	refresh     chan any
	stopTicking chan struct{}
	ticking     sync.WaitGroup
	stopOnce    sync.Once
	stopped     bool // under mu: mpb panics when a bar is added after Shutdown
}

// redrawEvery is how often bars are redrawn on a terminal.
const redrawEvery = 150 * time.Millisecond

// New starts a view writing to stderr, with bars when it is a terminal.
func New(stderr io.Writer, terminal bool) *View {
	v := &View{stderr: stderr, running: map[string]*mpb.Bar{}, finished: map[string]bool{}, quarter: map[string]int64{}}
	if terminal {
		v.refresh, v.stopTicking = make(chan any), make(chan struct{})
		v.bars = mpb.New(mpb.WithOutput(stderr), mpb.WithWidth(40), mpb.WithManualRefresh(v.refresh))
		v.ticking.Add(1)
		go v.tick()
	}
	return v
}

func (v *View) tick() {
	defer v.ticking.Done()
	ticker := time.NewTicker(redrawEvery)
	defer ticker.Stop()
	for {
		select {
		case now := <-ticker.C:
			select {
			case v.refresh <- now:
			case <-v.stopTicking:
				return
			}
		case <-v.stopTicking:
			return
		}
	}
}

// Logf writes a log line: above the bars on a terminal.
func (v *View) Logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...) + "\n"
	if v.bars != nil {
		if _, err := v.bars.Write([]byte(line)); err == nil {
			return
		}
	}
	io.WriteString(v.stderr, line)
}

// Report is the progress.Func the work reports to.
func (v *View) Report(task string, done, total int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.bars == nil {
		v.line(task, done, total)
		return
	}
	if v.stopped {
		return // a report from work still winding down after an interrupt
	}
	bar, ok := v.running[task]
	if !ok {
		if done >= total || v.finished[task] {
			return // finished before it was shown, or already
		}
		bar = v.bars.AddBar(total, mpb.BarRemoveOnComplete(),
			mpb.PrependDecorators(decor.Name(task, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f"), decor.Percentage(decor.WCSyncSpace)))
		v.running[task] = bar
	}
	bar.SetCurrent(done)
	if done >= total {
		delete(v.running, task)
		v.finished[task] = true
	}
}

// line writes the download's and the decompression's progress at every
// quarter; nodes say when they are done in the log already.
func (v *View) line(task string, done, total int64) {
	if (task != "download" && task != "decompress") || total <= 0 {
		return
	}
	q := done * 4 / total
	if q == 0 || q <= v.quarter[task] {
		return
	}
	v.quarter[task] = q
	fmt.Fprintf(v.stderr, "%s: %d%% (%s of %s)\n", task, q*25, bytesize.Format(done), strings.TrimSpace(bytesize.Format(total)))
}

// Stop ends the display: the log lines written so far are printed, and
// bars still running (an interrupt) are dropped. Calling it again does
// nothing.
func (v *View) Stop() {
	if v.bars != nil {
		v.stopOnce.Do(v.stopBars)
	}
}

func (v *View) stopBars() {
	v.mu.Lock()
	v.stopped = true
	v.mu.Unlock()
	close(v.stopTicking)
	v.ticking.Wait()
	// The last redraw, which prints what logf buffered since the one before.
	// mpb stops listening if it could not draw (a closed terminal), so do
	// not wait for it forever.
	select {
	case v.refresh <- time.Now():
	case <-time.After(2 * time.Second):
	}
	v.bars.Shutdown()
}

var _ progress.Func = (*View)(nil).Report
