package progressview

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer that the bars' goroutine and the test can
// share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestProgressKeepsTheLastLogLine: a line logged after the last bar was
// finished and redrawn away, right before the display stops, is printed
// (mpb only prints written lines at a redraw, and skips the last redraw
// when no bar changed; the build's "done in" line used to vanish so).
func TestProgressKeepsTheLastLogLine(t *testing.T) {
	for _, settle := range []time.Duration{0, 3 * redrawEvery} {
		var out syncBuffer
		v := New(&out, true)
		v.Report("srv: image", 10, 100)
		v.Logf("srv: written")
		v.Report("srv: image", 100, 100)
		// Let the redraw that removes the finished bar happen first.
		time.Sleep(settle)
		v.Logf("srv: done in 1s")
		v.Stop()
		v.Stop() // the build stops it once more on its way out
		for _, want := range []string{"srv: written\n", "srv: done in 1s\n"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("after %s: output lacks %q:\n%q", settle, want, out.String())
			}
		}
	}
}

// TestProgressStopsWithBarsRunning: an interrupted build stops the display
// with a bar still running, promptly, and keeps what was logged.
func TestProgressStopsWithBarsRunning(t *testing.T) {
	var out syncBuffer
	v := New(&out, true)
	v.Report("decompress", 5, 100)
	v.Logf("interrupted")
	stopped := make(chan struct{})
	go func() { v.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("stop did not return with a bar running")
	}
	if !strings.Contains(out.String(), "interrupted\n") {
		t.Errorf("output lacks the logged line:\n%q", out.String())
	}
}

// TestProgressAfterStop: work still winding down after an interrupt may
// report and log after the display stopped; neither panics (mpb does when
// a bar is added after its shutdown) nor draws a bar, and the line is
// still printed.
func TestProgressAfterStop(t *testing.T) {
	var out syncBuffer
	v := New(&out, true)
	v.Report("srv: image", 1, 100)
	v.Stop()
	drawn := out.String()
	v.Report("srv: xz", 1, 100)
	v.Report("srv: image", 50, 100)
	v.Logf("srv: interrupted")
	if got := strings.TrimPrefix(out.String(), drawn); got != "srv: interrupted\n" {
		t.Errorf("after stop, want only the logged line, got %q", got)
	}
}

// TestProgressLateReport: a report that arrives behind a task's final one
// (reports come from several workers) draws no bar again: it would stay
// on the screen unfinished until the end.
func TestProgressLateReport(t *testing.T) {
	v := New(&syncBuffer{}, true)
	defer v.Stop()
	v.Report("srv: xz", 10, 100)
	v.Report("srv: xz", 100, 100)
	v.Report("srv: xz", 90, 100)
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.running) != 0 {
		t.Errorf("a late report left bars running: %v", v.running)
	}
}
