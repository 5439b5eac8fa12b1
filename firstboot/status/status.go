// Package status defines the first-boot status record: what a node's first
// boot writes about itself (the first-boot scripts in firstboot write it;
// inspect reads it from a card, pibake watch receives it over HTTP). It
// stands alone so that its readers need not import the script renderer.
package status

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
)

// The status record: what a node's first boot writes about itself, after
// every change, to /var/lib/pibake/status.json and to pibake/status.json on
// the boot partition (templates/lib.sh: status), with the history as JSON
// lines in status.log beside it. No secrets: only stage names, reasons and
// log lines, which pibake never fills with a token or key.

// Status file names, in /var/lib/pibake and in firstboot.Dir on the boot
// partition.
const (
	File    = "status.json"
	LogFile = "status.log"
)

// Stages of a first boot, in the order they run.
const (
	StageActivate   = "activate"    // the payload installed into the root file system
	StageClock      = "clock"       // the clock synchronised (NTP)
	StageUser       = "user"        // the login user's SSH keys and shell
	StageAptUpdate  = "apt-update"  // apt-get update
	StageCgroup     = "cgroup"      // the memory cgroup k3s needs
	StageServerWait = "server-wait" // a joining node waits for the server's API
	StageK3sInstall = "k3s-install" // the k3s install script
	StageK3sStart   = "k3s-start"   // k3s (or k3s-agent) started
	StageK3sActive  = "k3s-active"  // systemd says the k3s service is active
	StageRegistered = "registered"  // server: its API answers with its node; agent: kubelet up, server reachable
	StagePackages   = "packages"    // the optional packages
	StageDone       = "done"        // the first boot finished
)

// States of a stage.
const (
	StateRunning = "running"
	StateOK      = "ok"
	StateWaiting = "waiting" // not done, going on anyway
	StateFailed  = "failed"
)

// Record is one status record.
type Record struct {
	Version int    `json:"version"`
	Node    string `json:"node"`
	Role    string `json:"role"`
	Build   string `json:"build"`
	Stage   string `json:"stage"`
	State   string `json:"state"`
	Time    string `json:"time"`
	// Boot is the start of the kernel's boot_id: records with the same
	// Boot were written in the same boot.
	Boot   string   `json:"boot"`
	Reason string   `json:"reason,omitempty"`
	Log    []string `json:"log,omitempty"`
	// Final is true when nothing more happens without the operator: the
	// first boot stopped for good (a missing memory cgroup, an activation
	// given up), or the reporter stopped waiting for k3s to register.
	Final bool `json:"final,omitempty"`
}

// Parse reads a status.json.
func Parse(b []byte) (*Record, error) {
	var s Record
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("status record: %w", err)
	}
	if s.Version != 1 || s.Stage == "" {
		return nil, fmt.Errorf("status record: not a pibake status (version %d, stage %q)", s.Version, s.Stage)
	}
	return &s, nil
}

// ParseLog reads a status.log: one record per line. A line that does
// not parse (cut short by a power cut) is skipped.
func ParseLog(b []byte) []Record {
	var out []Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if s, err := Parse(sc.Bytes()); err == nil {
			out = append(out, *s)
		}
	}
	return out
}
