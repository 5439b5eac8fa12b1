package watchterm

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pibake/pibake/internal/report"
)

// Refusals gathers refused reports from the receiver's handlers without
// ever making them wait, and decides what is shown: the first refusal
// from an address on its own line, then, for the rest of that minute, a
// count (Summary). A flood from one address thus costs a line a minute
// and a few counters, whatever its rate.
type Refusals struct {
	window time.Duration

	mu      sync.Mutex
	byAddr  map[string]*refusalWindow
	pending []report.Refusal // first refusals of a window, to show
	ready   chan struct{}
}

type refusalWindow struct {
	start time.Time
	count int
	kinds map[string]int
}

// maxAddrs is how many addresses are told apart; past it, refusals from
// new addresses count under otherAddrs (an attacker with many addresses
// gets a line a minute, not one per address).
const (
	maxAddrs   = 256
	otherAddrs = "other addresses"
)

// NewRefusals summarises refusals per address and minute.
func NewRefusals() *Refusals {
	return &Refusals{window: time.Minute, byAddr: map[string]*refusalWindow{}, ready: make(chan struct{}, 1)}
}

// Add records a refusal; it never blocks.
func (rs *Refusals) Add(r report.Refusal) {
	addr := host(r.Remote)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	w := rs.byAddr[addr]
	if w == nil && len(rs.byAddr) >= maxAddrs {
		addr = otherAddrs
		w = rs.byAddr[addr]
	}
	if w == nil {
		rs.byAddr[addr] = &refusalWindow{start: r.Received, kinds: map[string]int{}}
		if addr != otherAddrs {
			rs.pending = append(rs.pending, r)
			select {
			case rs.ready <- struct{}{}:
			default:
			}
			return
		}
		w = rs.byAddr[addr]
	}
	w.count++
	w.kinds[r.Kind]++
}

// Ready is signalled when a refusal is waiting to be shown on its own.
func (rs *Refusals) Ready() <-chan struct{} { return rs.ready }

// Summary counts the refusals from one address after the first was shown.
type Summary struct {
	Remote   string         `json:"remote"`
	Count    int            `json:"count"`
	Kinds    map[string]int `json:"kinds"`
	From, To time.Time      `json:"-"`
}

func (s Summary) String() string {
	span := "in the last minute"
	if d := s.To.Sub(s.From).Round(time.Second); d < 59*time.Second {
		span = "in the last " + d.String()
	}
	kinds := slices.Sorted(maps.Keys(s.Kinds))
	what := kinds[0]
	if len(kinds) > 1 {
		parts := make([]string, len(kinds))
		for i, k := range kinds {
			parts[i] = fmt.Sprintf("%s %d", k, s.Kinds[k])
		}
		what = strings.Join(parts, ", ")
	}
	return fmt.Sprintf("%d refused from %s %s: %s", s.Count, s.Remote, span, what)
}

// Take returns the refusals to show on their own, and a summary of each
// address whose minute is over at now (or of every address, with all):
// an address with more refusals in it starts a new minute of counting;
// one without is forgotten, so its next refusal is shown again.
func (rs *Refusals) Take(now time.Time, all bool) ([]report.Refusal, []Summary) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	shown := rs.pending
	rs.pending = nil
	var sums []Summary
	for _, addr := range slices.Sorted(maps.Keys(rs.byAddr)) {
		w := rs.byAddr[addr]
		if !all && now.Sub(w.start) < rs.window {
			continue
		}
		if w.count == 0 {
			delete(rs.byAddr, addr)
			continue
		}
		sums = append(sums, Summary{Remote: addr, Count: w.count, Kinds: w.kinds, From: w.start, To: now})
		rs.byAddr[addr] = &refusalWindow{start: now, kinds: map[string]int{}}
	}
	return shown, sums
}

// host is the address a request came from, without its port.
func host(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}
