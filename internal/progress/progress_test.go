package progress

import (
	"sync"
	"testing"
	"time"
)

func TestCounter(t *testing.T) {
	var mu sync.Mutex
	var reports [][2]int64
	f := func(task string, done, total int64) {
		mu.Lock()
		reports = append(reports, [2]int64{done, total})
		mu.Unlock()
	}
	c := New(f, "x", 1000)
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				c.Add(10)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	c.Finish()
	if first, last := reports[0], reports[len(reports)-1]; first != [2]int64{0, 1000} || last != [2]int64{1000, 1000} {
		t.Errorf("reports %v; want it to start at 0 and end at 1000 of 1000", reports)
	}
	// Throttled: far fewer reports than the 100 adds.
	if len(reports) > 10 {
		t.Errorf("%d reports for 100 adds in ~10 ms; want them throttled to one per %v", len(reports), Interval)
	}
	var nilCounter *Counter
	nilCounter.Add(1) // a nil Func's counter accepts everything
	nilCounter.Finish()
	if New(nil, "y", 1) != nil {
		t.Error("New(nil) is not nil")
	}
}
