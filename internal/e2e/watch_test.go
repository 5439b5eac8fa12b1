//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildPibake builds the pibake command the way a user runs it.
func buildPibake(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pibake")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/pibake").CombinedOutput(); err != nil {
		t.Fatalf("go build pibake: %v\n%s", err, out)
	}
	return bin
}

// watcher is a `pibake watch` on the host, which the guests reach through
// QEMU's guestfwd at the recipe's report URL and nothing else.
type watcher struct {
	addr   string
	log    string
	stderr bytes.Buffer
	done   chan error
	cmd    *exec.Cmd
}

// startWatch runs pibake watch for the e2e recipe, waiting for e2e-server
// and e2e-wifi (e2e-agent's server never answers, so it never registers),
// with every event as a JSON line in log.
func startWatch(t *testing.T, pibake, recipe, out, log string) *watcher {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{addr: ln.Addr().String(), log: log, done: make(chan error, 1)}
	ln.Close()
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	w.cmd = exec.Command(pibake, "watch", recipe, "--out", out, "--listen", w.addr, "--node", "e2e-server", "--node", "e2e-wifi", "--json", "--timeout", "120m")
	w.cmd.Stdout, w.cmd.Stderr = f, &w.stderr
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- w.cmd.Wait(); f.Close() }()
	t.Cleanup(func() { w.cmd.Process.Kill() })
	for range 500 {
		if c, err := net.Dial("tcp", w.addr); err == nil {
			c.Close()
			return w
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pibake watch is not listening on %s:\n%s", w.addr, w.stderr.String())
	return nil
}

// check runs after every node has booted: watch must have exited 0 on
// e2e-server's and e2e-wifi's registration, with e2e-agent's reports
// received too and none refused; under PIBAKE_E2E_BREAK it must exit 1
// naming e2e-server.
func (w *watcher) check(t *testing.T, brk string) {
	t.Helper()
	var err error
	select {
	case err = <-w.done:
	case <-time.After(2 * time.Minute):
		w.cmd.Process.Signal(syscall.SIGINT)
		err = <-w.done
		t.Errorf("pibake watch was still waiting two minutes after the last boot")
	}
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("pibake watch: %v", err)
	}
	data, _ := os.ReadFile(w.log)
	stages := map[string][]string{}
	refused := 0
	var summary struct {
		Registered bool `json:"registered"`
		Missing    []struct{ Node, Problem string }
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var line struct {
			Event  string `json:"event"`
			Node   string `json:"node"`
			Status struct{ Stage, State string }
			Count  int `json:"count"` // of a "refusals" summary
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("watch --json printed %q", sc.Text())
		}
		switch line.Event {
		case "report":
			stages[line.Node] = append(stages[line.Node], line.Status.Stage+" "+line.Status.State)
		case "refused":
			refused++
		case "refusals": // the rest from one address, counted
			refused += line.Count
		case "summary":
			json.Unmarshal(sc.Bytes(), &summary)
		}
	}
	t.Logf("pibake watch exited %d; %s\nreports: %v", code, strings.TrimSpace(w.stderr.String()), stages)
	if brk != "" {
		named := false
		for _, m := range summary.Missing {
			named = named || m.Node == "e2e-server"
		}
		// The break run fails anyway; this line says whether watch saw it.
		if code != 1 || !named {
			t.Errorf("PIBAKE_E2E_BREAK=%s: pibake watch exited %d with %+v; want 1 naming e2e-server", brk, code, summary.Missing)
		} else {
			t.Logf("PIBAKE_E2E_BREAK=%s: watch check passed: pibake watch exited 1 naming e2e-server (%+v)", brk, summary.Missing)
		}
		return
	}
	if code != 0 || !summary.Registered {
		t.Errorf("pibake watch exited %d (summary %+v); want 0 with e2e-server registered:\n%s", code, summary, w.stderr.String())
	}
	for _, host := range []string{"e2e-server", "e2e-wifi"} {
		if got := strings.Join(stages[host], ","); !strings.Contains(got, "activate ok") || !strings.Contains(got, "k3s-active ok,registered ok") {
			t.Errorf("%s reported %s; want its activation, k3s active and registered", host, got)
		}
	}
	if got := strings.Join(stages["e2e-agent"], ","); !strings.Contains(got, "activate ok") || !strings.Contains(got, "server-wait running") {
		t.Errorf("e2e-agent reported %q; want its activation and its wait for the server", got)
	}
	if refused > 0 {
		t.Errorf("pibake watch refused %d reports from the nodes", refused)
	}
}

// TestMain lets the test binary double as the bridge QEMU runs for every
// connection a guest opens to a forwarded port (guestfwd's cmd: form).
// The chardev form connects to the host once, when QEMU starts, and
// carries every guest connection over that one stream: a server that
// closes an idle connection (as pibake watch does) or a second TLS
// handshake breaks it for the rest of the boot.
func TestMain(m *testing.M) {
	if addr := os.Getenv("PIBAKE_E2E_BRIDGE"); addr != "" {
		os.Exit(bridge(addr))
	}
	os.Exit(m.Run())
}

// bridge joins stdin and stdout to one TCP connection to addr, until the
// server has answered everything the guest sent.
func bridge(addr string) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e bridge: %v\n", err)
		return 1
	}
	defer c.Close()
	go func() {
		io.Copy(c, os.Stdin)
		c.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(os.Stdout, c)
	return 0
}

// bridgeCommand is guestfwd's cmd: for a forward to addr on the host.
func bridgeCommand(t *testing.T, addr string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(exe+addr, ", ") {
		t.Fatalf("the test binary's path %q cannot go into a -netdev option", exe)
	}
	// slirp runs it without a shell (fork_exec splits the words itself).
	return "cmd:/usr/bin/env PIBAKE_E2E_BRIDGE=" + addr + " " + exe
}
