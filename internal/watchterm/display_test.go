package watchterm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/firstboot/status"
	"github.com/pibake/pibake/internal/report"
	"github.com/pibake/pibake/internal/safetext"
)

func testFleet() *report.Fleet {
	return report.NewFleet([]report.Planned{
		{Hostname: "srv", Role: "server", Builds: []string{"s1"}, Reports: true},
		{Hostname: "a-1", Role: "agent", Batch: 2, Builds: []string{"a1"}, Reports: true},
		{Hostname: "old", Role: "agent", Builds: []string{"o2"}, Reports: true},
	}, nil)
}

var at = time.Date(2026, 11, 26, 9, 40, 55, 0, time.Local)

// TestDisplay: the same events as lines (a log), and as a table redrawn
// in place with colour (a terminal).
func TestDisplay(t *testing.T) {
	fleet := testFleet()
	events := []report.Event{
		{Received: at, Status: status.Record{Node: "srv", Build: "s1", Stage: "registered", State: "ok", Reason: "the API answers"}},
		{Received: at, Status: status.Record{Node: "a-1", Build: "a1", Stage: "cgroup", State: "failed", Reason: "no memory cgroup", Final: true}},
		{Received: at, Status: status.Record{Node: "old", Build: "o1", Stage: "k3s-install", State: "running"}, OlderBuild: true},
	}
	var lines, table bytes.Buffer
	dl := New(Lines, &lines, fleet, false)
	dt := New(Table, &table, fleet, true)
	for _, e := range events {
		n := fleet.Apply(e)
		dl.Event(e, n)
		dt.Event(e, n)
	}
	dl.Refused(report.Refusal{Received: at, Remote: "10.0.0.9:4242", Node: "srv", Status: 401, Kind: report.RefusedSignature, Reason: "the signature does not match"})
	want := "09:40:55 srv server: registered ok: the API answers\n" +
		"09:40:55 a-1 agent: cgroup failed: no memory cgroup\n" +
		"09:40:55 old agent: k3s-install running (older build o1, not this directory's image)\n" +
		"09:40:55 refused a report from 10.0.0.9:4242 (claiming to be \"srv\"): the signature does not match\n"
	if lines.String() != want {
		t.Errorf("lines:\n%s\nwant:\n%s", lines.String(), want)
	}
	out := table.String()
	last := out[strings.LastIndex(out, "NODE"):]
	for _, s := range []string{"\x1b[4A\x1b[J", ansiGreen + "registered" + ansiReset, ansiRed + "failed" + ansiReset, "older build o1", "a-1   agent   2"} {
		if !strings.Contains(out, s) {
			t.Errorf("table output lacks %q:\n%q", s, out)
		}
	}
	if strings.Count(last, "\n") != 4 {
		t.Errorf("the last table has %d lines; want a header and 3 nodes:\n%s", strings.Count(last, "\n"), last)
	}
	var summary bytes.Buffer
	dt.Finish(&summary, "")
	if !strings.Contains(summary.String(), "2 of the awaited nodes did not register:\n  a-1: failed at cgroup: no memory cgroup\n  old: heard only from an older build (o1)") {
		t.Errorf("summary:\n%s", summary.String())
	}
}

// TestBootFactsShown: how a node booted (issue 25) is in every mode:
// lines at the bootloader stage, the table's detail while nothing else
// is to say, and the status in JSON.
func TestBootFactsShown(t *testing.T) {
	facts := &status.Facts{Model: "Raspberry Pi 5 Model B Rev 1.0", Root: "nvme0n1p2", Transport: "nvme", MemoryCgroup: true,
		BootOrder: "0xf461", BootloaderSource: "rpi-eeprom-config", BootOrderStaged: "0xf146"}
	booted := "root nvme0n1p2 on nvme; memory cgroup present; Raspberry Pi 5 Model B Rev 1.0"
	events := []report.Event{
		{Received: at, Status: status.Record{Node: "srv", Build: "s1", Stage: "bootloader", State: "ok", Facts: facts}},
		{Received: at, Status: status.Record{Node: "srv", Build: "s1", Stage: "clock", State: "ok", Facts: facts}},
	}
	for _, tt := range []struct {
		mode  Mode
		wants []string
	}{
		{mode: Lines, wants: []string{"09:40:55 srv booted: " + booted + "\n", "09:40:55 srv bootloader: BOOT_ORDER 0xf461; read with rpi-eeprom-config; BOOT_ORDER 0xf146 staged for the next reboot\n"}},
		{mode: Table, wants: []string{"root nvme0n1p2 on nvme; memory cgroup present; Raspberry ..."}},
		{mode: JSON, wants: []string{`"facts":{"model":"Raspberry Pi 5 Model B Rev 1.0","root":"nvme0n1p2","transport":"nvme"`}},
	} {
		fleet := testFleet()
		var out bytes.Buffer
		d := New(tt.mode, &out, fleet, false)
		for _, e := range events {
			d.Event(e, fleet.Apply(e))
		}
		for _, w := range tt.wants {
			if !strings.Contains(out.String(), w) {
				t.Errorf("mode %d lacks %q:\n%s", tt.mode, w, out.String())
			}
		}
	}
	if r := testFleetRow(t, events); r.Booted != booted || !strings.Contains(r.Bootloader, "0xf461") {
		t.Errorf("Row: booted %q, bootloader %q", r.Booted, r.Bootloader)
	}
}

func testFleetRow(t *testing.T, events []report.Event) report.Row {
	t.Helper()
	fleet := testFleet()
	var n *report.NodeState
	for _, e := range events {
		n = fleet.Apply(e)
	}
	return n.Row()
}

// hostile is what a signed report (a card's key read off its FAT
// partition before activation) or a stranger could put in any string.
var hostile = []string{
	"\x1b]0;owned\a\x1b[2J",              // retitle the window, clear the screen
	"ok\x1b[1A\x1b[2K\rregistered ok",    // rewrite the line above
	"\u009b2J\u009d0;owned\u009c",        // the same as C1 controls
	"a\x7fb\x00c\x08d",                   // DEL, NUL, backspace
	"\xff\xfe\xc3(",                      // not UTF-8
	"safe\u202edesrever\u2066",           // bidi overrides
	strings.Repeat("\x1b[31mred", 20000), // long
}

// rawCSI finds escape sequences other than the table's own.
func stripOwn(s string) string {
	for _, own := range []string{ansiReset, ansiGreen, ansiRed, ansiYellow, "\x1b[J"} {
		s = strings.ReplaceAll(s, own, "")
	}
	for n := 1; n < 100; n++ {
		s = strings.ReplaceAll(s, fmt.Sprintf("\x1b[%dA", n), "")
	}
	return s
}

// TestNothingRawReachesTheTerminal: a hostile stage, state, reason,
// build, log line or claimed name reaches no mode's output raw, and every
// line stays short; JSON lines stay valid JSON.
func TestNothingRawReachesTheTerminal(t *testing.T) {
	for _, mode := range []Mode{Lines, Table, JSON} {
		for i, h := range hostile {
			t.Run(fmt.Sprintf("mode%d/%d", mode, i), func(t *testing.T) {
				fleet := testFleet()
				var out, errOut bytes.Buffer
				d := New(mode, &out, fleet, true)
				for _, e := range []report.Event{
					{Received: at, Status: status.Record{Node: "srv", Build: "s1", Stage: h, State: h, Reason: h, Log: []string{h, h}}},
					{Received: at, Status: status.Record{Node: "old", Build: h, Stage: "k3s-install", State: h, Reason: h}, OlderBuild: true},
					{Received: at, Status: status.Record{Node: "a-1", Build: "a1", Stage: "bootloader", State: "ok", Facts: &status.Facts{
						Model: h, Root: h, Transport: h, USBID: h, USBDriver: h, BootOrder: h, BootOrderStaged: h,
						BootloaderVersion: h, BootloaderSource: h, BootloaderProblem: h}}},
					{Received: at, Status: status.Record{Node: "a-1", Build: "a1", Stage: "cgroup", State: "failed", Reason: h, Final: true}},
				} {
					d.Event(e, fleet.Apply(e))
				}
				d.Refused(report.Refusal{Received: at, Remote: "10.0.0.9:4242", Node: h, Status: 403, Kind: report.RefusedNotInPlan, Reason: "malformed report: " + h})
				d.Summarised(Summary{Remote: "10.0.0.9", Count: 3, Kinds: map[string]int{report.RefusedSignature: 3}, From: at, To: at.Add(time.Minute)})
				d.Finish(&errOut, "")
				for name, got := range map[string]string{"stdout": stripOwn(out.String()), "stderr": errOut.String()} {
					if p := safetext.FirstUnsafe(got); p >= 0 {
						t.Errorf("%s has a raw %q at %d:\n%q", name, got[p:min(p+8, len(got))], p, got)
					}
					for line := range strings.Lines(got) {
						if n := len([]rune(line)); n > 1500 {
							t.Errorf("%s has a line of %d runes", name, n)
						}
					}
				}
				if mode != JSON {
					return
				}
				for line := range strings.Lines(out.String()) {
					var v map[string]any
					if err := json.Unmarshal([]byte(line), &v); err != nil {
						t.Errorf("not JSON: %v\n%q", err, line)
					}
				}
			})
		}
	}
}

func TestRefusalsSummarised(t *testing.T) {
	rs := NewRefusals()
	var out bytes.Buffer
	d := New(Lines, &out, testFleet(), false)
	for i := range 500 {
		kind := report.RefusedSignature
		if i%5 == 0 {
			kind = report.RefusedTooLarge
		}
		rs.Add(report.Refusal{Received: at.Add(time.Duration(i) * 10 * time.Millisecond), Remote: "10.0.0.7:" + fmt.Sprint(40000+i), Node: "srv", Kind: kind, Reason: "no"})
	}
	rs.Add(report.Refusal{Received: at, Remote: "[fe80::1]:1", Kind: report.RefusedMalformed, Reason: "malformed report: eof"})
	select {
	case <-rs.Ready():
	default:
		t.Error("Ready not signalled")
	}
	show := func(now time.Time, all bool) {
		shown, sums := rs.Take(now, all)
		for _, r := range shown {
			d.Refused(r)
		}
		for _, s := range sums {
			d.Summarised(s)
		}
	}
	show(at.Add(10*time.Second), false)
	show(at.Add(61*time.Second), false)
	rs.Add(report.Refusal{Received: at.Add(62 * time.Second), Remote: "10.0.0.7:1", Kind: report.RefusedSignature})
	show(at.Add(70*time.Second), true)
	want := "09:40:55 refused a report from 10.0.0.7:40000 (claiming to be \"srv\"): no\n" +
		"09:40:55 refused a report from [fe80::1]:1: malformed report: eof\n" +
		"09:41:56 499 refused from 10.0.0.7 in the last minute: bad signature 400, too large 99\n" +
		"09:42:05 1 refused from 10.0.0.7 in the last 9s: bad signature\n"
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	// A flood from many addresses is told apart up to maxAddrs, then lumped.
	rs = NewRefusals()
	for i := range 3 * maxAddrs {
		rs.Add(report.Refusal{Received: at, Remote: fmt.Sprintf("10.1.%d.%d:1", i/256, i%256), Kind: report.RefusedSignature})
	}
	shown, sums := rs.Take(at.Add(time.Minute), false)
	if len(shown) != maxAddrs || len(sums) != 1 || sums[0].Remote != otherAddrs || sums[0].Count != 2*maxAddrs {
		t.Errorf("%d shown, summaries %+v; want %d shown and %d from %s", len(shown), sums, maxAddrs, 2*maxAddrs, otherAddrs)
	}
}

// FuzzDisplay: whatever strings a signed report or a refusal carries,
// no mode writes a character a terminal would act on (beyond the table's
// own cursor and colour sequences), no line grows past a screenful, and
// JSON lines stay JSON.
func FuzzDisplay(f *testing.F) {
	for _, h := range hostile[:len(hostile)-1] {
		f.Add(h, h, h, h, h)
	}
	f.Add("k3s-install", "running", "", "b1", "srv")
	f.Fuzz(func(t *testing.T, stage, state, reason, build, claim string) {
		for _, mode := range []Mode{Lines, Table, JSON} {
			fleet := testFleet()
			var out, errOut bytes.Buffer
			d := New(mode, &out, fleet, true)
			for _, e := range []report.Event{
				{Received: at, Status: status.Record{Node: "srv", Build: "s1", Stage: stage, State: state, Reason: reason, Log: []string{reason}}},
				{Received: at, Status: status.Record{Node: "old", Build: build, Stage: stage, State: state, Reason: reason}, OlderBuild: true},
				{Received: at, Status: status.Record{Node: "a-1", Build: "a1", Stage: stage, State: "failed", Reason: reason, Final: true}},
			} {
				d.Event(e, fleet.Apply(e))
			}
			d.Refused(report.Refusal{Received: at, Remote: "10.0.0.9:4242", Node: claim, Status: 400, Kind: report.RefusedMalformed, Reason: reason})
			d.Finish(&errOut, "")
			for name, got := range map[string]string{"stdout": stripOwn(out.String()), "stderr": errOut.String()} {
				if p := safetext.FirstUnsafe(got); p >= 0 {
					t.Fatalf("mode %d: %s has a raw %q:\n%q", mode, name, got[p:min(p+8, len(got))], got)
				}
				for line := range strings.Lines(got) {
					if n := len([]rune(line)); n > 1500 {
						t.Fatalf("mode %d: %s has a line of %d runes", mode, name, n)
					}
				}
			}
			if mode == JSON {
				for line := range strings.Lines(out.String()) {
					if !json.Valid([]byte(line)) {
						t.Fatalf("not JSON: %q", line)
					}
				}
			}
		}
	})
}
