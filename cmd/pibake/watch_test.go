package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/report"
	"github.com/pibake/pibake/internal/testimage"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// nodeStubs are the commands a node's first boot runs that cannot run
// here, each answering as the real one does on a Pi whose k3s unit is in
// state $K3S_STATE (default active): apt succeeds; systemctl is-active
// tells the state (k3s is Type=notify: "activating" until it is ready);
// k3s kubectl lists the node only while k3s runs, else the connection is
// refused; curl answers the k3s server's /ping with "pong", the kubelet's
// health check with "ok" only while k3s runs, fetches the stand-in
// install script, and passes everything else (the reports) to the real
// curl.
var nodeStubs = map[string]string{
	"apt-get":   `exit 0`,
	"apt-cache": `exit 1`,
	"systemctl": `if [ "$1" = is-active ]; then [ "$2" = --quiet ] || echo "${K3S_STATE:-active}"; [ "${K3S_STATE:-active}" = active ]; exit; fi; exit 0`,
	"k3s":       `[ "$1 $2 $3" = "kubectl get node" ] && [ "${K3S_STATE:-active}" = active ] && echo "node/$4"`,
	"curl": `case "$*" in
*/ping*) echo pong ;;
*127.0.0.1:10248/healthz*) [ "${K3S_STATE:-active}" = active ] || exit 7; echo ok ;;
*get.k3s.io*) while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done; printf '#!/bin/sh\nexit 0\n' >"$out" ;;
*) exec "$REAL_CURL" "$@" ;;
esac`,
}

// bootOptions vary a node's boot: the first boot's and the reporter's
// environment, and a record queued ahead of the first boot's own.
type bootOptions struct {
	firstbootEnv, reportEnv []string
	queued                  string
}

// bootNode plays one node's first boot in a fake root, with the payload
// copied by mtools from the boot partition of the image pibake built: the
// activator, then the first boot, then the reporter until it has sent
// every record and exits.
func bootNode(t *testing.T, img string, opt bootOptions) (root string) {
	t.Helper()
	mcopy := testimage.Tool(t, "mcopy")
	curl := testimage.Tool(t, "curl")
	im, err := diskimg.Open(img, false)
	if err != nil {
		t.Fatal(err)
	}
	offset := im.BootPartition().StartSector * 512
	im.Close()
	dir := t.TempDir()
	root = filepath.Join(dir, "root")
	boot := filepath.Join(root, "boot", "firmware")
	stubs := filepath.Join(dir, "stubs")
	for _, d := range []string{boot, stubs, filepath.Join(root, "run/systemd/timesync"), filepath.Join(root, "sys/fs/cgroup"), filepath.Join(root, "proc"), filepath.Join(root, "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(mcopy, "-s", "-n", "-i", fmt.Sprintf("%s@@%d", img, offset), "::pibake", "::cmdline.txt", boot).CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v\n%s", err, out)
	}
	for name, content := range map[string]string{
		"run/systemd/timesync/synchronized": "",
		"sys/fs/cgroup/cgroup.controllers":  "cpuset cpu io memory pids\n",
		"proc/cmdline":                      "root=PARTUUID=a1b2c3d4-02 cgroup_memory=1 cgroup_enable=memory\n",
		"etc/hosts":                         "127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range nodeStubs {
		if err := os.WriteFile(filepath.Join(stubs, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := append(os.Environ(), "PATH="+stubs+":"+os.Getenv("PATH"), "REAL_CURL="+curl,
		"PIBAKE_ROOT="+root, "PIBAKE_BOOT="+boot, "PIBAKE_RETRY_DELAY=0", "PIBAKE_TIME_WAIT=0", "PIBAKE_BATCH_DELAY=0",
		"PIBAKE_SERVER_WAIT=0", "PIBAKE_K3S_WAIT=0", "PIBAKE_REGISTER_WAIT=0", "PIBAKE_POLL=0", "PIBAKE_REPORT_IDLE=1", "PIBAKE_REPORT_LINGER=2", "PIBAKE_REPORT_RECHECK=0")
	for _, step := range []struct {
		script string
		env    []string
	}{
		{script: filepath.Join(boot, "pibake", "activate.sh")},
		{script: filepath.Join(root, "usr/local/lib/pibake/firstboot.sh"), env: opt.firstbootEnv},
		{script: filepath.Join(root, "usr/local/lib/pibake/report.sh"), env: opt.reportEnv},
	} {
		script := step.script
		if opt.queued != "" && strings.HasSuffix(script, "firstboot.sh") {
			if err := os.WriteFile(filepath.Join(root, "var/lib/pibake/reports/0000000000.json"), []byte(opt.queued+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, "sh", script)
		cmd.Env = append(append([]string(nil), env...), step.env...)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil || len(out) > 0 {
			logs, _ := exec.Command("sh", "-c", "tail -n 20 "+filepath.Join(root, "var/log/pibake")+"/*.log").CombinedOutput()
			t.Fatalf("%s: %v\n%s\n%s", filepath.Base(script), err, out, logs)
		}
	}
	return root
}

// watchLab is a recipe built with a report URL on loopback, and a
// `pibake watch` of it running.
type watchLab struct {
	recipe, out, addr string
	code              chan int
	stdout, stderr    *syncBuffer
}

// startWatchLab writes a recipe of the test base image, token and nodes,
// whose nodes report to a free loopback port, builds it, and starts
// pibake watch on it with watchArgs.
func startWatchLab(t *testing.T, token, nodes string, watchArgs ...string) *watchLab {
	t.Helper()
	l := newWatchLab(t, token, nodes)
	l.pibake(t, "build", l.recipe, "--out", l.out)
	l.watch(t, watchArgs...)
	return l
}

// newWatchLab writes the recipe only.
func newWatchLab(t *testing.T, token, nodes string) *watchLab {
	t.Helper()
	t.Setenv("NO_COLOR", "1")
	// Small: watch's subject is the reports, not the release layout.
	base := testimage.For(t, buildtest.SmallBookworm())
	dir := t.TempDir()
	l := &watchLab{recipe: filepath.Join(dir, "lab.hcl"), out: filepath.Join(dir, "out"), addr: freeAddr(t),
		code: make(chan int, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	src := fmt.Sprintf("image {\n  source = %q\n}\ncluster {\n  token = %q\n  report {\n    url = \"http://%s\"\n  }\n}\n%s", base, token, l.addr, nodes)
	if err := os.WriteFile(l.recipe, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return l
}

// pibake runs a command that must succeed.
func (l *watchLab) pibake(t *testing.T, args ...string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), args, &stdout, &stderr); code != exitOK {
		t.Fatalf("pibake %s exited %d:\n%s", args[0], code, stderr.String())
	}
}

// watch starts pibake watch on the lab.
func (l *watchLab) watch(t *testing.T, watchArgs ...string) {
	t.Helper()
	args := append([]string{"watch", l.recipe, "--out", l.out, "--listen", l.addr}, watchArgs...)
	go func() { l.code <- run(context.Background(), args, l.stdout, l.stderr) }()
	waitListening(t, l.addr, l.code, l.stderr)
}

// exit waits for watch to end.
func (l *watchLab) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case c := <-l.code:
		return c
	case <-time.After(within):
		t.Fatalf("watch did not end within %s:\n%s\n%s", within, l.stderr.String(), l.stdout.String())
		return -1
	}
}

// TestWatchSeesTheFleetRegister: a real build with a report URL, the real
// first-boot scripts of each image played in a fake root, and the real
// reporter posting over loopback to a real `pibake watch`, which exits 0
// once both nodes registered; a forged report on the way is refused and
// shown, and the token never appears.
func TestWatchSeesTheFleetRegister(t *testing.T) {
	const token = "watch-test-cluster-token-0123456789"
	l := startWatchLab(t, token, "node \"srv\" {\n  role = \"server\"\n  ip   = \"192.168.7.10/24\"\n}\nnode \"agent\" {\n  role = \"agent\"\n}\n", "--json", "--timeout", "3m")
	out, addr, wout, werr := l.out, l.addr, l.stdout, l.stderr
	if fi, err := os.Stat(filepath.Join(out, ".pibake", "report.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("report key: %v, %v; want mode 0600", fi, err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"inspect", filepath.Join(out, "srv.img")}, &stdout, &stderr); code != exitOK ||
		!strings.Contains(stdout.String(), "reports:  to http://"+addr+" (pibake watch), signed with this node's key") {
		t.Errorf("inspect does not say where srv reports (exit %d):\n%s", code, stdout.String())
	}

	// A stranger's report, signed with a key of its own, is refused.
	forged := []byte(`{"nonce":"00112233445566778899aabbccddeeff","status":{"version":1,"node":"srv","role":"server","build":"x","stage":"registered","state":"ok","time":"","boot":""}}`)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+report.ReportPath, bytes.NewReader(forged))
	req.Header.Set(report.SignatureHeader, report.Sign([]byte("stranger"), forged))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged report: %v %v; want 401", resp, err)
	}

	for _, host := range []string{"srv", "agent"} {
		root := bootNode(t, filepath.Join(out, host+".img"), bootOptions{})
		// The server is played first and watch waits for the agent, so
		// every record of the server is sent; the agent's after
		// "registered" find watch gone, and the reporter gives up on
		// them once the first boot has ended PIBAKE_REPORT_LINGER ago.
		log, _ := os.ReadFile(filepath.Join(root, "var/log/pibake/report.log"))
		switch gaveUp := strings.Contains(string(log), "gave up"); {
		case host == "srv" && gaveUp:
			t.Errorf("srv: the reporter gave up while watch was listening:\n%s", log)
		case host == "agent" && !gaveUp:
			t.Errorf("agent: the reporter did not give up after watch had gone:\n%s", log)
		}
		if _, err := os.Stat(filepath.Join(root, "var/lib/pibake/report.done")); err != nil {
			t.Errorf("%s: the reporter did not mark itself done: %v", host, err)
		}
		if _, err := os.Stat(filepath.Join(root, "boot/firmware/pibake/report.key")); err == nil {
			t.Errorf("%s: the report key is still on the boot partition", host)
		}
		if fi, err := os.Stat(filepath.Join(root, "etc/pibake/report.key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: /etc/pibake/report.key: %v; want mode 0600", host, err)
		}
	}
	if c := l.exit(t, time.Minute); c != exitOK {
		t.Fatalf("watch exited %d:\n%s\n%s", c, werr.String(), wout.String())
	}

	// Every stage of both nodes arrived in order, none refused but the
	// forgery, and the summary says both registered.
	stages := map[string][]string{}
	refused := 0
	var summary map[string]any
	sc := bufio.NewScanner(strings.NewReader(wout.String()))
	for sc.Scan() {
		var line struct {
			Event  string `json:"event"`
			Node   string `json:"node"`
			Status struct {
				Stage, State string
			} `json:"status"`
			Registered bool `json:"registered"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("watch --json printed a line that is not JSON: %q", sc.Text())
		}
		switch line.Event {
		case "report":
			stages[line.Node] = append(stages[line.Node], line.Status.Stage+" "+line.Status.State)
		case "refused":
			refused++
		case "summary":
			json.Unmarshal(sc.Bytes(), &summary)
		}
	}
	want := "activate running,activate ok,clock ok,apt-update ok,cgroup ok,k3s-install running,k3s-install ok,k3s-start ok,k3s-active ok,registered ok"
	for _, host := range []string{"srv", "agent"} {
		if !inOrder(stages[host], strings.Split(want, ",")) {
			t.Errorf("%s reported %s; want %s in this order", host, strings.Join(stages[host], ","), want)
		}
	}
	if agent := strings.Join(stages["agent"], ","); !strings.Contains(agent, "server-wait running") {
		t.Errorf("the agent did not report waiting for its server: %s", agent)
	}
	if refused != 1 {
		t.Errorf("%d refusals shown; want 1 (the forgery)", refused)
	}
	if summary == nil || summary["registered"] != true {
		t.Errorf("summary = %v; want registered", summary)
	}
	if strings.Contains(wout.String()+werr.String(), token) {
		t.Error("watch printed the cluster token")
	}
}

// TestWatchLateAndNever: a node whose k3s comes up only after its first
// boot has finished is reported registered by its reporter, which goes on
// checking; one whose k3s never does is reported, LINGER after the end,
// as given up, and watch exits 1 at once naming it, well before its
// timeout.
func TestWatchLateAndNever(t *testing.T) {
	start := time.Now()
	l := startWatchLab(t, "watch-late-token-0123456789abcdef", "node \"late\" {\n  role = \"server\"\n  ip   = \"192.168.7.10/24\"\n}\nnode \"never\" {\n  role = \"agent\"\n}\n", "--timeout", "5m")
	out, wout, werr := l.out, l.stdout, l.stderr

	late := bootNode(t, filepath.Join(out, "late.img"), bootOptions{firstbootEnv: []string{"K3S_STATE=activating"}})
	log, _ := os.ReadFile(filepath.Join(late, "var/log/pibake/report.log"))
	if !strings.Contains(string(log), "every report sent; the first boot has finished") {
		t.Errorf("late: the reporter did not end cleanly:\n%s", log)
	}
	bootNode(t, filepath.Join(out, "never.img"), bootOptions{firstbootEnv: []string{"K3S_STATE=activating"}, reportEnv: []string{"K3S_STATE=activating"}})
	if c := l.exit(t, time.Minute); c != exitFailure {
		t.Fatalf("watch exited %d; want 1:\n%s", c, werr.String())
	}
	if took := time.Since(start); took > 4*time.Minute {
		t.Errorf("watch ended after %s, at its timeout, not when the last node gave up", took)
	}
	for _, want := range []string{"late server: registered ok: after the first boot had finished", "never agent: registered waiting: not registered within 2s"} {
		if !strings.Contains(wout.String(), want) {
			t.Errorf("watch did not show %q:\n%s", want, wout.String())
		}
	}
	if !strings.Contains(werr.String(), "1 of the awaited nodes did not register:\n  never: at registered (waiting)") {
		t.Errorf("summary:\n%s", werr.String())
	}
}

// TestReporterDropsWhatCannotBeAccepted: a queued record the receiver
// refuses as malformed (400) is dropped and the rest still go.
func TestReporterDropsWhatCannotBeAccepted(t *testing.T) {
	l := startWatchLab(t, "watch-drop-token-0123456789abcdef", "node \"srv\" {\n  role = \"server\"\n}\n", "--timeout", "2m")
	out, wout, werr := l.out, l.stdout, l.stderr
	root := bootNode(t, filepath.Join(out, "srv.img"), bootOptions{queued: `{"version":2,"node":"srv"}`})
	if c := l.exit(t, time.Minute); c != exitOK {
		t.Fatalf("watch exited %d:\n%s\n%s", c, werr.String(), wout.String())
	}
	log, _ := os.ReadFile(filepath.Join(root, "var/log/pibake/report.log"))
	if !strings.Contains(string(log), "refused 0000000000.json for good (HTTP 400); dropped") {
		t.Errorf("the reporter did not drop the malformed record:\n%s", log)
	}
}

// TestWatchCountsFlashedCards: cards flashed from a directory where
// nothing was built (flash needs no build) count as its images: watch
// starts, and exits 0 once the node on the card registers.
func TestWatchCountsFlashedCards(t *testing.T) {
	l := newWatchLab(t, "watch-flash-token-0123456789abcdef", "node \"srv\" {\n  role = \"server\"\n}\n")
	card := filepath.Join(t.TempDir(), "card.img")
	l.pibake(t, "flash", l.recipe, "srv="+card, "--out", l.out, "--yes")
	if _, err := os.Stat(filepath.Join(l.out, "srv.img")); err == nil {
		t.Fatal("flash wrote a per-node image into the out directory")
	}
	l.watch(t, "--timeout", "2m")
	bootNode(t, card, bootOptions{})
	if c := l.exit(t, time.Minute); c != exitOK {
		t.Fatalf("watch exited %d:\n%s\n%s", c, l.stderr.String(), l.stdout.String())
	}
	if strings.Contains(l.stdout.String(), "older build") {
		t.Errorf("the flashed card was taken for an older build:\n%s", l.stdout.String())
	}
}

// inOrder reports whether want is a subsequence of got.
func inOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// waitListening waits until watch accepts connections.
func waitListening(t *testing.T, addr string, code chan int, stderr *syncBuffer) {
	t.Helper()
	for range 200 {
		select {
		case c := <-code:
			t.Fatalf("watch exited %d before listening:\n%s", c, stderr.String())
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("watch is not listening on %s:\n%s", addr, stderr.String())
}

// TestWatchRefusesWhatCannotWork: each mistake is said before watch
// listens, with what to do.
func TestWatchRefusesWhatCannotWork(t *testing.T) {
	base := testimage.For(t, buildtest.SmallBookworm())
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("image {\n  source = %q\n}\n", base)+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	reporting := write("reporting.hcl", `cluster {
  token = "watch-refusals-token-0123456789"
  report {
    url = "http://127.0.0.1:1"
  }
}
node "srv" {
  role = "server"
  ip   = "192.168.7.10/24"
}
node "quiet" {
  role = "agent"
  report {
    url = "http://127.0.0.1:2"
  }
}
`)
	silent := write("silent.hcl", "node \"srv\" {\n  role = \"server\"\n}\n")
	out := filepath.Join(dir, "out")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{name: "no node reports", args: []string{"watch", silent, "--out", out}, code: exitFailure, want: "no node of"},
		{name: "not built", args: []string{"watch", reporting, "--out", out}, code: exitFailure, want: "has no report key"},
		{name: "unknown node", args: []string{"watch", reporting, "--out", out, "--node", "nope"}, code: exitFailure, want: "--node nope: no such node"},
		{name: "negative timeout", args: []string{"watch", reporting, "--timeout", "-1s"}, code: exitUsage, want: "must be positive"},
		{name: "no recipe", args: []string{"watch"}, code: exitUsage, want: "want exactly one recipe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tt.args, &stdout, &stderr); code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d saying %q", code, stderr.String(), tt.code, tt.want)
			}
		})
	}

	// Built, but only srv: waiting for quiet too cannot work.
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"build", reporting, "--out", out, "--node", "srv"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("build: %d\n%s", code, stderr.String())
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{args: []string{"watch", reporting, "--out", out}, want: "neither built nor flashed from " + out + ": quiet"},
		{args: []string{"watch", reporting, "--out", out, "--node", "srv", "--listen", busy.Addr().String()}, want: "address already in use"},
	} {
		stderr.Reset()
		if code := run(context.Background(), tt.args, &stdout, &stderr); code != exitFailure || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr:\n%s\nwant 1 saying %q", tt.args, code, stderr.String(), tt.want)
		}
	}

	// --timeout: exit 1 naming the node never heard from, as a line a
	// log can hold (stdout is not a terminal here).
	stderr.Reset()
	stdout.Reset()
	if code := run(context.Background(), []string{"watch", reporting, "--out", out, "--node", "srv", "--listen", "127.0.0.1:0", "--timeout", "300ms"}, &stdout, &stderr); code != exitFailure {
		t.Errorf("timeout: exit %d; want 1", code)
	}
	if !strings.Contains(stderr.String(), "timed out after 300ms; 1 of the awaited nodes did not register:\n  srv: not heard from") {
		t.Errorf("timeout summary:\n%s", stderr.String())
	}
	// Ctrl-C: 130, with the same list.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	stderr.Reset()
	if code := run(ctx, []string{"watch", reporting, "--out", out, "--node", "srv", "--listen", "127.0.0.1:0"}, &stdout, &stderr); code != exitInterrupted || !strings.Contains(stderr.String(), "interrupted; 1 of the awaited nodes did not register") {
		t.Errorf("interrupt: exit %d, stderr:\n%s", code, stderr.String())
	}
}
