package firstboot

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/firstboot/status"
)

// The behaviour tests run the real activator and first-boot script with sh
// against a temporary root directory. Stub commands on PATH record what the
// scripts ran (with the environment that matters) and fail on cue. Each
// has a root of its own and passes its environment to the scripts (never
// t.Setenv), so they run in parallel: the scripts fork hundreds of
// short processes and wait on them, which leaves a core idle.

// stubs are written into the test's bin directory. Each appends one line
// to $STUB_LOG. A stub named in $<NAME>_FAILS fails that many times first.
var stubs = map[string]string{
	"apt-get": `record apt-get "$@"
case "$*" in
*" install "*) maybe_fail APT_INSTALL ;;
*) maybe_fail APT_GET ;;
esac
exit 0`,
	"apt-cache": `record apt-cache "$@"; [ "${APT_CACHE_HAS:-0}" = 1 ]`,
	// systemctl is-active answers as systemd does for a k3s unit in state
	// $K3S_STATE: k3s is Type=notify, so an agent that has not reached
	// its server stays "activating" (exit 3); with $K3S_ACTIVE_AFTER=N it
	// turns active after N answers.
	"systemctl": `record systemctl "$@"
if [ "$1" = is-active ]; then
	state=${K3S_STATE:-active}
	if [ -n "${K3S_ACTIVE_AFTER:-}" ]; then
		n=$(($(cat "$STUB_DIR/is-active.count" 2>/dev/null || echo 0) + 1)); echo $n >"$STUB_DIR/is-active.count"
		state=activating; [ "$n" -gt "$K3S_ACTIVE_AFTER" ] && state=active
	fi
	[ "$2" = --quiet ] || echo "$state"
	[ "$state" = active ]
	exit
fi
exit 0`,
	// k3s kubectl get node NAME, as k3s answers it with its API down
	// ($K3S_API=down: the connection is refused) or without the node
	// registered yet ($K3S_NODE=absent; with $K3S_LISTED_AFTER=N, for the
	// first N asks).
	"k3s": `record k3s "$@"
case "$*" in
"kubectl get node "*)
	if [ -n "${K3S_LISTED_AFTER:-}" ]; then
		n=$(($(cat "$STUB_DIR/get-node.count" 2>/dev/null || echo 0) + 1)); echo $n >"$STUB_DIR/get-node.count"
		[ "$n" -gt "$K3S_LISTED_AFTER" ] || K3S_NODE=absent
	fi
	if [ "${K3S_API:-up}" = down ]; then echo "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?" >&2; exit 1; fi
	if [ "${K3S_NODE:-listed}" = absent ]; then echo "Error from server (NotFound): nodes \"$4\" not found" >&2; exit 1; fi
	echo "node/$4" ;;
*) exit 1 ;;
esac`,
	// getent passwd NAME: the user once userconf has renamed it, with the
	// shell Raspberry Pi OS gave its first user ($USER_SHELL).
	"getent":      `[ -d "$PIBAKE_ROOT/home/$2" ] || exit 2; echo "$2:x:1000:1000::/home/$2:${USER_SHELL:-/bin/bash}"`,
	"usermod":     `record usermod "$@"; exit 0`,
	"chown":       `record chown "$@"; exit 0`,
	"rfkill":      `record rfkill "$@"; exit 0`,
	"nmcli":       `record nmcli "$@"; exit 0`,
	"iw":          `record iw "$@"; exit 0`,
	"hostnamectl": `record hostnamectl "$@"; exit 0`,
	// curl: a k3s server answers /ping with "pong"; the kubelet's health
	// check answers "ok", or refuses the connection (exit 7) while
	// $KUBELET=down.
	"curl": `record curl "$@"
case "$*" in
*/v1/nonce*|*/v1/report*) exec "$REAL_CURL" "$@" ;;
*/ping*) maybe_fail CURL_PING; echo pong; exit 0 ;;
*127.0.0.1:10248/healthz*) [ "${KUBELET:-up}" = down ] && exit 7; echo ok; exit 0 ;;
esac
# A download: the stand-in install script.
maybe_fail CURL_DOWNLOAD
while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
cp "$STUB_DIR/install.sh" "$out"`,
}

const stubPrelude = `#!/bin/sh
record() { printf '%s\n' "$*" >>"$STUB_LOG"; }
maybe_fail() {
	n=$(cat "$STUB_DIR/$1.count" 2>/dev/null || echo 0)
	eval "limit=\${$1_FAILS:-0}"
	if [ "$n" -lt "$limit" ]; then echo $((n + 1)) >"$STUB_DIR/$1.count"; exit 1; fi
}
`

// installStub is the stand-in k3s install.sh: it records its role,
// variables and arguments.
const installStub = `#!/bin/sh
printf 'install.sh EXEC=%s SKIP_START=%s VERSION=%s CHANNEL=%s SKIP_DOWNLOAD=%s args=%s\n' \
	"${INSTALL_K3S_EXEC:-}" "${INSTALL_K3S_SKIP_START:-}" "${INSTALL_K3S_VERSION:-}" \
	"${INSTALL_K3S_CHANNEL:-}" "${INSTALL_K3S_SKIP_DOWNLOAD:-}" "$*" >>"$STUB_LOG"
[ -z "${INSTALL_FAILS_ONCE:-}" ] || [ -e "$STUB_DIR/install.failed" ] || { touch "$STUB_DIR/install.failed"; exit 1; }
exit 0
`

const originalCmdline = "console=serial0,115200 console=tty1 root=PARTUUID=a1b2c3d4-02 rootfstype=ext4 fsck.repair=yes rootwait quiet"

// cgroupControllers is /sys/fs/cgroup/cgroup.controllers on Raspberry Pi
// OS with cgroup_enable=memory; without it, "memory" is missing.
const cgroupControllers = "cpuset cpu io memory hugetlb pids rdma misc\n"

// fakeNode is one node's temporary root with its payload on the boot
// partition, as the builder would write it, and what pi-gen leaves in a
// stock Raspberry Pi OS Lite root file system that pibake touches.
type fakeNode struct {
	root, boot, stubDir, log string
	env                      []string
}

func newFakeNode(t *testing.T, p Payload) *fakeNode {
	t.Helper()
	dir := t.TempDir()
	n := &fakeNode{root: filepath.Join(dir, "root"), stubDir: filepath.Join(dir, "stubs"), log: filepath.Join(dir, "commands.log")}
	n.boot = filepath.Join(n.root, "boot", "firmware")
	for _, d := range []string{n.boot, filepath.Join(n.root, "etc", "sudoers.d"), filepath.Join(n.root, "home", "ops"),
		filepath.Join(n.root, "run", "systemd", "timesync"), filepath.Join(n.root, "usr", "share", "zoneinfo", "Europe"), n.stubDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/hostname":                                              "raspberrypi\n",
		"etc/hosts":                                                 "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n127.0.1.1\traspberrypi\n",
		"run/systemd/timesync/synchronized":                         "",
		"usr/share/zoneinfo/Europe/Berlin":                          "TZif",
		"sys/fs/cgroup/cgroup.controllers":                          cgroupControllers,
		"proc/cmdline":                                              originalCmdline + " " + strings.Join(p.CmdlineAdd, " ") + "\n",
		"boot/firmware/cmdline.txt":                                 originalCmdline + " " + strings.Join(p.CmdlineAdd, " ") + "\n",
		"etc/sudoers.d/010_pi-nopasswd":                             "pi ALL=(ALL) NOPASSWD: ALL\n",    // Bookworm's raspberrypi-sys-mods
		"var/lib/NetworkManager/NetworkManager.state":               "[main]\nWirelessEnabled=false\n", // pi-gen stage2/02-net-tweaks
		"var/lib/systemd/rfkill/platform-fe215040.serial:bluetooth": "0\n",
		"var/lib/systemd/rfkill/platform-fe300000.mmcnr:wlan":       "1\n", // saved by systemd-rfkill on an earlier shutdown
	}
	for _, f := range p.Files {
		data := f.Data
		if f.Source != "" {
			b, err := os.ReadFile(f.Source)
			if err != nil {
				t.Fatal(err)
			}
			data = b
		}
		files["boot/firmware/"+f.Path] = string(data)
	}
	for name, content := range files {
		n.write(t, name, content)
	}
	n.rootOn(t, sdRoot)
	n.write(t, "../stubs/install.sh", installStub)
	for name, body := range stubs {
		if err := os.WriteFile(filepath.Join(n.stubDir, name), []byte(stubPrelude+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.env = append(os.Environ(),
		"PATH="+n.stubDir+":"+os.Getenv("PATH")+":/usr/sbin:/sbin",
		"PIBAKE_ROOT="+n.root, "PIBAKE_BOOT="+n.boot,
		"STUB_LOG="+n.log, "STUB_DIR="+n.stubDir,
		"PIBAKE_RETRY_DELAY=0", "PIBAKE_TIME_WAIT=0", "PIBAKE_BATCH_DELAY=0", "PIBAKE_SERVER_WAIT=30", "PIBAKE_USER_WAIT=0",
		"PIBAKE_K3S_WAIT=0", "PIBAKE_REGISTER_WAIT=0", "PIBAKE_POLL=0",
		"EEPROM_STATE="+filepath.Join(n.stubDir, "eeprom"),
	)
	return n
}

func (n *fakeNode) write(t *testing.T, rel, content string) {
	t.Helper()
	name := filepath.Join(n.root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

// run runs a script from the fake root with extra environment and returns
// its exit status.
func (n *fakeNode) run(t *testing.T, script string, env ...string) int {
	t.Helper()
	cmd := exec.Command("sh", script)
	cmd.Env = append(append([]string(nil), n.env...), env...)
	out, err := cmd.CombinedOutput()
	if len(out) > 0 {
		t.Errorf("%s printed (it should log to a file instead):\n%s", filepath.Base(script), out)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	}
	t.Fatalf("run %s: %v", script, err)
	return -1
}

// activate runs the activator, which must always exit 0: a failed
// systemd.run= unit would end the boot.
func (n *fakeNode) activate(t *testing.T, env ...string) {
	t.Helper()
	if code := n.run(t, filepath.Join(n.boot, "pibake", "activate.sh"), env...); code != 0 {
		t.Fatalf("activate.sh exited %d; it must never fail:\n%s", code, n.readOr("var/log/pibake/activate.log"))
	}
}

func (n *fakeNode) firstboot(t *testing.T, env ...string) int {
	t.Helper()
	return n.run(t, filepath.Join(n.root, "usr", "local", "lib", "pibake", "firstboot.sh"), env...)
}

func (n *fakeNode) read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.root, rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return string(b)
}

func (n *fakeNode) readOr(rel string) string {
	b, _ := os.ReadFile(filepath.Join(n.root, rel))
	return string(b)
}

func (n *fakeNode) mode(t *testing.T, rel string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(filepath.Join(n.root, rel))
	if err != nil {
		t.Fatalf("stat %s: %v", rel, err)
	}
	return fi.Mode().Perm()
}

func (n *fakeNode) exists(rel string) bool {
	_, err := os.Lstat(filepath.Join(n.root, rel))
	return err == nil
}

func (n *fakeNode) commands(t *testing.T) string {
	b, err := os.ReadFile(n.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// status reads the status record from the root file system and checks
// that the boot partition holds the same one.
func (n *fakeNode) status(t *testing.T) *status.Record {
	t.Helper()
	root := n.read(t, "var/lib/pibake/status.json")
	if boot := n.read(t, "boot/firmware/pibake/status.json"); boot != root {
		t.Errorf("status on the boot partition differs from the root's:\n%s\n%s", boot, root)
	}
	s, err := status.Parse([]byte(root))
	if err != nil {
		t.Fatalf("status.json: %v\n%s", err, root)
	}
	return s
}

// history reads the stages of status.log as "stage state" lines.
func (n *fakeNode) history(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, s := range status.ParseLog([]byte(n.read(t, "var/lib/pibake/status.log"))) {
		lines = append(lines, s.Stage+" "+s.State)
	}
	return strings.Join(lines, "\n") + "\n"
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}

func mustNotContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if strings.Contains(got, w) {
			t.Errorf("%s contains %q:\n%s", what, w, got)
		}
	}
}

func TestActivateAndFirstbootServer(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, haRecipe, "cp-1", Options{BuildID: "b1"}))
	n.activate(t)
	if got := n.read(t, "etc/hostname"); got != "cp-1\n" {
		t.Errorf("/etc/hostname = %q", got)
	}
	mustContain(t, "/etc/hosts", n.read(t, "etc/hosts"), "127.0.1.1\tcp-1\n", "127.0.0.1\tlocalhost\n")
	mustNotContain(t, "/etc/hosts", n.read(t, "etc/hosts"), "raspberrypi")
	cfg := n.read(t, "etc/rancher/k3s/config.yaml")
	mustContain(t, "config.yaml", cfg, `token: "`+testToken+`"`, "cluster-init: true", `node-name: "cp-1"`, `node-ip: "192.168.1.10"`)
	for rel, want := range map[string]os.FileMode{
		"etc/rancher/k3s/config.yaml":                                    0o600,
		"etc/NetworkManager/system-connections/pibake-eth0.nmconnection": 0o600,
		"etc/systemd/system/pibake-firstboot.service":                    0o644,
		"usr/local/lib/pibake/firstboot.sh":                              0o755,
		"usr/local/lib/pibake/lib.sh":                                    0o644,
		"etc/pibake/node.env":                                            0o644,
	} {
		if got := n.mode(t, rel); got != want {
			t.Errorf("%s has mode %#o; want %#o", rel, got, want)
		}
	}
	link, err := os.Readlink(filepath.Join(n.root, "etc/systemd/system/multi-user.target.wants/pibake-firstboot.service"))
	if err != nil || link != "/etc/systemd/system/pibake-firstboot.service" {
		t.Errorf("enable symlink = %q, %v", link, err)
	}
	// The server has no user block: the default user cannot log in, so
	// the OS's passwordless sudo rule goes (nobody needs it).
	if n.exists("etc/sudoers.d/010_pi-nopasswd") {
		t.Error("010_pi-nopasswd is still there for a user without passwordless_sudo")
	}
	// Secrets are gone from the boot partition; the cmdline lost exactly
	// the activator's own arguments.
	for _, rel := range []string{"boot/firmware/pibake/k3s-config.yaml", "boot/firmware/pibake/pibake-eth0.nmconnection"} {
		if n.exists(rel) {
			t.Errorf("%s is still on the boot partition", rel)
		}
	}
	if got, want := n.read(t, "boot/firmware/cmdline.txt"), originalCmdline+" cgroup_memory=1 cgroup_enable=memory\n"; got != want {
		t.Errorf("cmdline.txt = %q; want %q", got, want)
	}
	if n.exists("etc/machine-id") {
		t.Error("the activator wrote /etc/machine-id")
	}
	if s := n.status(t); s.Stage != status.StageActivate || s.State != status.StateOK || s.Node != "cp-1" || s.Build != "b1" {
		t.Errorf("status after activation = %+v", s)
	}

	// The first boot: apt update fails twice (retry path), then the install.
	if code := n.firstboot(t, "APT_GET_FAILS=2"); code != 0 {
		t.Fatalf("firstboot exited %d:\n%s", code, n.read(t, "var/log/pibake/firstboot.log"))
	}
	cmds := n.commands(t)
	update := "apt-get -o DPkg::Lock::Timeout=300 update --error-on=any\n"
	mustContain(t, "commands", cmds,
		update+update+update,
		"install.sh EXEC=server SKIP_START=true VERSION=v1.31.4+k3s1 CHANNEL= SKIP_DOWNLOAD= args=--disable=traefik --kubelet-arg=max-pods=50\n",
		"systemctl start --no-block k3s\n")
	mustNotContain(t, "commands", cmds, "/ping") // the founding server waits for nobody
	mustContain(t, "firstboot.log", n.read(t, "var/log/pibake/firstboot.log"), "attempt 1/5 failed", "attempt 2/5 failed")
	if !n.exists("var/lib/pibake/firstboot.done") {
		t.Error("no done-stamp after a successful first boot")
	}
	if got, want := n.history(t), "activate running\nactivate ok\nbootloader ok\nclock ok\napt-update ok\ncgroup ok\nk3s-install running\nk3s-install ok\nk3s-start ok\nk3s-active ok\nregistered ok\npackages ok\ndone ok\n"; got != want {
		t.Errorf("status history:\n%s\nwant:\n%s", got, want)
	}
}

func TestFirstbootAgent(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, haRecipe, "worker-7", Options{BuildID: "b1"}))
	n.activate(t)
	cfg := n.read(t, "etc/rancher/k3s/config.yaml")
	mustContain(t, "agent config.yaml", cfg, `server: "https://192.168.1.10:6443"`, `token: "`+testAgentToken+`"`)
	mustNotContain(t, "agent config.yaml", cfg, testToken)
	// The user has a password: sudo asks for it, so the OS's passwordless
	// rule is removed, as raspi-config's do_sudo_pass 0 does.
	if n.exists("etc/sudoers.d/010_pi-nopasswd") || n.exists("etc/sudoers.d/010_ops-nopasswd") {
		t.Error("a passwordless sudo rule is left for a user with a password")
	}
	// The server is not up for the first two pings; the package is missing.
	if code := n.firstboot(t, "CURL_PING_FAILS=2", "APT_CACHE_HAS=0", "USER_SHELL=/usr/sbin/nologin"); code != 0 {
		t.Fatalf("firstboot exited %d:\n%s", code, n.read(t, "var/log/pibake/firstboot.log"))
	}
	cmds := n.commands(t)
	mustContain(t, "commands", cmds,
		"apt-get -o DPkg::Lock::Timeout=300 -y -o Dpkg::Options::=--force-confold full-upgrade\n",
		"apt-cache show linux-modules-extra-raspi\n",
		"apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends vim open-iscsi\n",
		"curl -ksS --max-time 5 -o /dev/null https://192.168.1.10:6443/ping\n",
		"install.sh EXEC=agent SKIP_START=true VERSION=v1.31.4+k3s1",
		"systemctl start --no-block k3s-agent\n",
		"chown -R ops:",
		"usermod -s /bin/bash ops\n") // Trixie 2026's first user has nologin
	mustNotContain(t, "commands", cmds, "install -y linux-modules-extra-raspi")
	// k3s comes first, the optional packages after it.
	if strings.Index(cmds, "install.sh EXEC=agent") > strings.Index(cmds, "install -y --no-install-recommends vim") {
		t.Errorf("the optional packages were installed before k3s:\n%s", cmds)
	}
	log := n.read(t, "var/log/pibake/firstboot.log")
	mustContain(t, "firstboot.log", log, "not answering yet", "linux-modules-extra-raspi is not available", "join batch 3")
	if got := n.read(t, "home/ops/.ssh/authorized_keys"); !strings.HasPrefix(got, "ssh-ed25519 ") || n.mode(t, "home/ops/.ssh/authorized_keys") != 0o600 {
		t.Errorf("authorized_keys = %q (%#o)", got, n.mode(t, "home/ops/.ssh/authorized_keys"))
	}
	mustContain(t, "status history", n.history(t), "user ok\n", "server-wait running\n")
}

func TestFirstbootJoiningServerWithModulesExtra(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, haRecipe, "cp-2", Options{BuildID: "b1"}))
	n.activate(t)
	if code := n.firstboot(t, "APT_CACHE_HAS=1"); code != 0 {
		t.Fatalf("firstboot exited %d:\n%s", code, n.commands(t))
	}
	mustContain(t, "config.yaml", n.read(t, "etc/rancher/k3s/config.yaml"), `server: "https://192.168.1.10:6443"`, `agent-token: "`+testAgentToken+`"`)
	mustNotContain(t, "config.yaml", n.read(t, "etc/rancher/k3s/config.yaml"), "cluster-init")
	mustContain(t, "commands", n.commands(t), "/ping\n", "install.sh EXEC=server", "systemctl start --no-block k3s\n")
}

// TestFirstbootRetries: a failing install is retried in the run, then by
// systemd (exit 1, Restart=on-failure), never left for the next reboot.
func TestFirstbootRetries(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, singleRecipe, "pi", Options{BuildID: "b1"}))
	n.activate(t)
	// The installer fails once; the retry inside the run recovers.
	if code := n.firstboot(t, "INSTALL_FAILS_ONCE=1"); code != 0 || !n.exists("var/lib/pibake/firstboot.done") {
		t.Fatalf("firstboot exited %d, no done-stamp after a run that recovered:\n%s", code, n.read(t, "var/log/pibake/firstboot.log"))
	}
	mustContain(t, "firstboot.log", n.read(t, "var/log/pibake/firstboot.log"), "attempt 1/3 failed, retrying in 0s: sh ")
	mustContain(t, "commands", n.commands(t), "CHANNEL=stable", "curl -sSfL --max-time 60 -o ")

	// The install script cannot be downloaded at all: exit 1 for systemd
	// to retry, the failure recorded, no stamp.
	m := newFakeNode(t, renderFor(t, singleRecipe, "pi", Options{BuildID: "b1"}))
	m.activate(t)
	if code := m.firstboot(t, "CURL_DOWNLOAD_FAILS=100"); code != 1 {
		t.Fatalf("firstboot exited %d with no install script; want 1 (systemd retries)", code)
	}
	if s := m.status(t); s.Stage != status.StageK3sInstall || s.State != status.StateFailed || !strings.Contains(s.Reason, "could not download https://get.k3s.io") || len(s.Log) == 0 {
		t.Errorf("status = %+v", s)
	}
	if m.exists("var/lib/pibake/firstboot.done") || m.exists("var/lib/pibake/stages/k3s") {
		t.Error("a stamp was written after a failure")
	}
	if code := m.firstboot(t); code != 0 || !m.exists("var/lib/pibake/firstboot.done") {
		t.Errorf("the retry did not finish the job:\n%s", m.read(t, "var/log/pibake/firstboot.log"))
	}
}

// TestOptionalPackagesNeverBlockK3s: apt installs that fail leave k3s
// installed and started; systemd retries the packages, and after
// PIBAKE_PACKAGE_RUNS runs the failure is recorded and left.
func TestOptionalPackagesNeverBlockK3s(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, haRecipe, "worker-1", Options{BuildID: "b1"}))
	n.activate(t)
	if code := n.firstboot(t, "APT_INSTALL_FAILS=100", "APT_GET_FAILS=100", "PIBAKE_PACKAGE_RUNS=2"); code != 1 {
		t.Fatalf("firstboot exited %d with apt failing; want 1 (systemd retries the packages)", code)
	}
	mustContain(t, "commands", n.commands(t), "install.sh EXEC=agent", "systemctl start --no-block k3s-agent\n")
	if s := n.status(t); s.Stage != status.StagePackages || s.State != status.StateFailed || !strings.Contains(s.Reason, "installing vim open-iscsi failed") {
		t.Errorf("status = %+v", s)
	}
	before := strings.Count(n.commands(t), "install.sh")
	if code := n.firstboot(t, "APT_INSTALL_FAILS=100", "APT_GET_FAILS=100", "PIBAKE_PACKAGE_RUNS=2"); code != 0 {
		t.Fatalf("firstboot exited %d on the last package run; want 0 (given up, recorded)", code)
	}
	if after := strings.Count(n.commands(t), "install.sh"); after != before {
		t.Errorf("k3s was installed again on a package retry (%d install.sh runs, then %d)", before, after)
	}
	s := n.status(t)
	if s.Stage != status.StageDone || !strings.Contains(s.Reason, "with problems: apt-update,packages") {
		t.Errorf("final status = %+v", s)
	}
	mustContain(t, "status history", n.history(t), "packages failed\n")
}

// TestMemoryCgroupChecked: without the memory controller k3s cannot run;
// the first boot says so with the command line it saw, installs nothing
// and exits 3, which systemd does not retry.
func TestMemoryCgroupChecked(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, singleRecipe, "pi", Options{BuildID: "b1"}))
	n.activate(t)
	n.write(t, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io pids\n")
	n.write(t, "proc/cmdline", originalCmdline+" cgroup_disable=memory\n")
	if code := n.firstboot(t); code != 3 {
		t.Fatalf("firstboot exited %d without the memory cgroup; want 3", code)
	}
	s := n.status(t)
	if s.Stage != status.StageCgroup || s.State != status.StateFailed || !s.Final || !strings.Contains(s.Reason, "cgroup_disable=memory") || !strings.Contains(s.Reason, "cgroup_enable=memory") {
		t.Errorf("status = %+v; want a final cgroup failure", s)
	}
	mustNotContain(t, "commands", n.commands(t), "install.sh")
}

// TestActivateFailureIsBounded cuts the activator short (its config
// directory cannot be made): it records the failure, keeps its arguments
// and secrets for the next boot, exits 0. A later boot succeeds and ends
// in the same state as one clean run; a third run changes nothing.
func TestActivateFailureIsBounded(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, singleRecipe, "wifi", Options{BuildID: "b1"}))
	blocker := filepath.Join(n.root, "etc", "rancher")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	n.activate(t)
	if !n.exists("boot/firmware/pibake/k3s-config.yaml") || !strings.Contains(n.read(t, "boot/firmware/cmdline.txt"), "systemd.run=") {
		t.Fatal("a failed activator already removed secrets or its arguments")
	}
	if s := n.status(t); s.Stage != status.StageActivate || s.State != status.StateFailed || !strings.Contains(s.Reason, "attempt 1 of 3") {
		t.Errorf("status after a failed activation = %+v", s)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	n.activate(t)
	cmdline := n.read(t, "boot/firmware/cmdline.txt")
	want := originalCmdline + " cgroup_memory=1 cgroup_enable=memory cfg80211.ieee80211_regdom=DE\n"
	if cmdline != want {
		t.Errorf("cmdline.txt = %q; want %q", cmdline, want)
	}
	wifi := n.read(t, "etc/NetworkManager/system-connections/pibake-wifi.nmconnection")
	mustContain(t, "wifi keyfile", wifi, "ssid=lab net\n", "psk="+testPSK+"\n", "address1=10.0.0.20/24\n")
	n.activate(t)
	if got := n.read(t, "boot/firmware/cmdline.txt"); got != want {
		t.Errorf("a repeated activate changed cmdline.txt to %q", got)
	}
	if n.read(t, "etc/rancher/k3s/config.yaml") == "" || n.read(t, "etc/hostname") != "wifi\n" {
		t.Error("a repeated activate lost installed files")
	}

	// A failure that lasts: after three boots the activator gives up,
	// removes its arguments and the secrets, and says why.
	m := newFakeNode(t, renderFor(t, singleRecipe, "wifi", Options{BuildID: "b1"}))
	if err := os.WriteFile(filepath.Join(m.root, "etc", "rancher"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for boot := 1; boot <= 3; boot++ {
		m.activate(t)
	}
	if got := m.read(t, "boot/firmware/cmdline.txt"); got != want {
		t.Errorf("cmdline.txt after giving up = %q; want %q (normal boot, cgroup kept)", got, want)
	}
	for _, rel := range []string{"boot/firmware/pibake/k3s-config.yaml", "boot/firmware/pibake/pibake-wifi.nmconnection"} {
		if m.exists(rel) {
			t.Errorf("%s is still on the boot partition after giving up", rel)
		}
	}
	if s := m.status(t); s.State != status.StateFailed || !strings.Contains(s.Reason, "gave up after 3 attempts") || len(s.Log) == 0 {
		t.Errorf("status after giving up = %+v", s)
	}
	mustContain(t, "activate.log", m.read(t, "var/log/pibake/activate.log"), "/etc/rancher")
}

// TestActivateWifi turns the radio on the way raspi-config's
// do_wifi_country does, against pi-gen's WirelessEnabled=false.
func TestActivateWifi(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		state string // NetworkManager.state before
	}{
		{name: "pi-gen state", state: "[main]\nWirelessEnabled=false\n"},
		{name: "no key", state: "[main]\nNetworkingEnabled=true\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newFakeNode(t, renderFor(t, singleRecipe, "wifi", Options{BuildID: "b1"}))
			n.write(t, "var/lib/NetworkManager/NetworkManager.state", tt.state)
			n.activate(t)
			n.activate(t) // idempotent
			state := n.read(t, "var/lib/NetworkManager/NetworkManager.state")
			if strings.Count(state, "WirelessEnabled=true\n") != 1 || strings.Contains(state, "WirelessEnabled=false") || !strings.HasPrefix(state, "[main]\n") {
				t.Errorf("NetworkManager.state = %q", state)
			}
			if got := n.read(t, "var/lib/systemd/rfkill/platform-fe300000.mmcnr:wlan"); got != "0\n" {
				t.Errorf("saved wlan rfkill state = %q; want 0 (unblocked)", got)
			}
			if got := n.read(t, "var/lib/systemd/rfkill/platform-fe215040.serial:bluetooth"); got != "0\n" {
				t.Errorf("bluetooth rfkill state changed to %q", got)
			}
		})
	}
	// A node without Wi-Fi leaves the radio as the OS has it.
	n := newFakeNode(t, renderFor(t, singleRecipe, "pi", Options{BuildID: "b1"}))
	n.activate(t)
	if got := n.read(t, "var/lib/NetworkManager/NetworkManager.state"); got != "[main]\nWirelessEnabled=false\n" {
		t.Errorf("a node without Wi-Fi changed NetworkManager.state to %q", got)
	}
}

// TestActivateSudoAndSSH: a key-only user gets a passwordless sudo rule
// that visudo accepts; ssh = true enables the service itself (Trixie may
// not act on the ssh file).
func TestActivateSudoAndSSH(t *testing.T) {
	t.Parallel()
	visudo := requireTool(t, "visudo")
	n := newFakeNode(t, renderFor(t, staticRecipe, "pi", Options{BuildID: "b1"}))
	n.activate(t)
	rule := "etc/sudoers.d/010_ops-nopasswd"
	if got := n.read(t, rule); got != "ops ALL=(ALL) NOPASSWD: ALL\n" || n.mode(t, rule) != 0o440 {
		t.Errorf("%s = %q (%#o)", rule, got, n.mode(t, rule))
	}
	if out, err := exec.Command(visudo, "-c", "-f", filepath.Join(n.root, rule)).CombinedOutput(); err != nil {
		t.Errorf("visudo -c: %v\n%s", err, out)
	}
	mustContain(t, "commands", n.commands(t), "systemctl --root="+n.root+" enable ssh\n")
	if n.exists("boot/firmware/pibake/sudoers") {
		t.Error("the sudoers rule is left on the boot partition")
	}

	// A rule visudo refuses is not installed, and the activation fails.
	m := newFakeNode(t, renderFor(t, staticRecipe, "pi", Options{BuildID: "b1"}))
	m.write(t, "boot/firmware/pibake/sudoers", "ops ALL=(ALL NOPASSWD ALL\n")
	m.activate(t)
	if m.exists(rule) {
		t.Error("a sudoers rule visudo rejects was installed")
	}
	if s := m.status(t); s.State != status.StateFailed {
		t.Errorf("status = %+v; want failed", s)
	}
}

func TestAirgapInstall(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, airgapRecipe, "pi", Options{BuildID: "b1"}))
	n.activate(t)
	if code := n.firstboot(t); code != 0 {
		t.Fatalf("firstboot exited %d:\n%s", code, n.commands(t))
	}
	if got := n.mode(t, "usr/local/bin/k3s"); got != 0o755 {
		t.Errorf("/usr/local/bin/k3s has mode %#o; want 0755", got)
	}
	if !n.exists("var/lib/rancher/k3s/agent/images/k3s-airgap-images-arm64.tar.zst") {
		t.Error("air-gap images not installed")
	}
	if n.exists("boot/firmware/pibake/airgap") {
		t.Error("air-gap files left on the boot partition")
	}
	cmds := n.commands(t)
	mustContain(t, "commands", cmds, "install.sh EXEC=server SKIP_START=true VERSION= CHANNEL=stable SKIP_DOWNLOAD=true")
	mustNotContain(t, "commands", cmds, "curl -sSfL")
}

// TestActivateInstallsCA: the founding server's activator puts every CA
// file where k3s looks for a custom CA, with k3s's modes, sets the node
// password, and leaves no key on the boot partition.
func TestActivateInstallsCA(t *testing.T) {
	t.Parallel()
	files := fakeCAFiles()
	n := newFakeNode(t, renderFor(t, haRecipe, "cp-1", Options{BuildID: "b1", CAHash: testCAHash, CAFiles: files, NodePassword: "0123456789abcdef0123456789abcdef"}))
	n.activate(t)
	const tls = "var/lib/rancher/k3s/server/tls/"
	for name, data := range files {
		want := os.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			want = 0o600
		}
		if got := n.read(t, tls+name); got != string(data) {
			t.Errorf("%s = %q; want %q", tls+name, got, data)
		}
		if got := n.mode(t, tls+name); got != want {
			t.Errorf("%s: mode %v, want %v", tls+name, got, want)
		}
	}
	for _, dir := range []string{"var/lib/rancher/k3s/server", tls, tls + "etcd"} {
		if got := n.mode(t, dir); got != 0o700 {
			t.Errorf("%s: mode %v, want 0700", dir, got)
		}
	}
	if got, mode := n.read(t, "etc/rancher/node/password"), n.mode(t, "etc/rancher/node/password"); got != "0123456789abcdef0123456789abcdef\n" || mode != 0o600 {
		t.Errorf("node password %q, mode %v", got, mode)
	}
	for _, rel := range []string{"boot/firmware/pibake/tls", "boot/firmware/pibake/node-password"} {
		if n.exists(rel) {
			t.Errorf("%s is still on the boot partition", rel)
		}
	}
	if s := n.status(t); s.Stage != status.StageActivate || s.State != status.StateOK {
		t.Errorf("status = %+v", s)
	}
}

// TestActivateRefusesPartialCA: k3s replaces a missing CA pair with a new
// self-signed CA without a word, and every joiner would then be refused;
// so a missing file fails the activation, installing none of them.
func TestActivateRefusesPartialCA(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, haRecipe, "cp-1", Options{BuildID: "b1", CAHash: testCAHash, CAFiles: fakeCAFiles()}))
	if err := os.Remove(filepath.Join(n.boot, "pibake", "tls", "etcd", "peer-ca.key")); err != nil {
		t.Fatal(err)
	}
	n.activate(t)
	if s := n.status(t); s.State != status.StateFailed {
		t.Errorf("status = %+v; want a failed activation", s)
	}
	if n.exists("var/lib/rancher/k3s/server/tls/server-ca.crt") {
		t.Error("part of the CA was installed")
	}
	mustContain(t, "activate.log", n.read(t, "var/log/pibake/activate.log"), "tls/etcd/peer-ca.key is missing")
}

// TestAgentCarriesNoCA: a joining node's payload has no CA file and no
// server token, only its node password and the pinned agent token.
func TestAgentCarriesNoCA(t *testing.T) {
	t.Parallel()
	full := "K10" + testCAHash + "::node:" + testAgentToken
	p := renderFor(t, haRecipe, "worker-1", Options{BuildID: "b1", Token: testToken, CAHash: testCAHash, JoinToken: full, NodePassword: "00112233445566778899aabbccddeeff"})
	for _, f := range p.Files {
		if strings.HasPrefix(f.Path, Dir+"/tls/") || strings.Contains(string(f.Data), "PRIVATE KEY") {
			t.Errorf("agent payload carries %s", f.Path)
		}
		if strings.Contains(string(f.Data), testToken) {
			t.Errorf("agent payload file %s holds the server token", f.Path)
		}
	}
	n := newFakeNode(t, p)
	n.activate(t)
	mustContain(t, "config.yaml", n.read(t, "etc/rancher/k3s/config.yaml"), `token: "`+full+`"`)
	if n.exists("var/lib/rancher/k3s/server") {
		t.Error("an agent's activation made k3s server directories")
	}
	if got := n.read(t, "etc/rancher/node/password"); got != "00112233445566778899aabbccddeeff\n" {
		t.Errorf("node password %q", got)
	}
}

// TestReportsAreQueuedNotSent: with a report URL, the activator installs
// the reporter and the node's key (root only, gone from the boot
// partition), and every status record is queued for it in order; neither
// the activator nor the first boot touches the network for a report, so
// a slow or absent receiver cannot delay them.
func TestReportsAreQueuedNotSent(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, reportRecipe, "pi", Options{BuildID: "b1", ReportKey: testReportKey}))
	n.activate(t)
	if code := n.firstboot(t); code != 0 {
		t.Fatalf("firstboot exited %d:\n%s", code, n.read(t, "var/log/pibake/firstboot.log"))
	}
	if got := strings.TrimSpace(n.read(t, "etc/pibake/report.key")); got != testReportKey {
		t.Errorf("/etc/pibake/report.key = %q", got)
	}
	for rel, want := range map[string]os.FileMode{"etc/pibake/report.key": 0o600, "usr/local/lib/pibake/report.sh": 0o755, "etc/systemd/system/pibake-report.service": 0o644} {
		if got := n.mode(t, rel); got != want {
			t.Errorf("%s has mode %#o; want %#o", rel, got, want)
		}
	}
	if n.exists("boot/firmware/pibake/report.key") {
		t.Error("the report key is still on the boot partition")
	}
	if link, err := os.Readlink(filepath.Join(n.root, "etc/systemd/system/multi-user.target.wants/pibake-report.service")); err != nil || link != "/etc/systemd/system/pibake-report.service" {
		t.Errorf("reporter enable symlink = %q, %v", link, err)
	}
	mustNotContain(t, "commands", n.commands(t), "192.168.1.5")
	queued, _ := filepath.Glob(filepath.Join(n.root, "var/lib/pibake/reports/[0-9]*.json"))
	var got []string
	for _, q := range queued {
		s, err := status.Parse([]byte(n.read(t, strings.TrimPrefix(q, n.root+"/"))))
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		got = append(got, s.Stage+" "+s.State)
	}
	if want := strings.TrimSpace(n.history(t)); strings.Join(got, "\n") != want {
		t.Errorf("queued records:\n%s\nwant the status history:\n%s", strings.Join(got, "\n"), want)
	}
}

// TestQueueKeepsTheNewest: a node whose receiver never answers keeps the
// newest 100 records, in order, not a growing pile. (Each record costs
// the script some sixty processes: 110 of them pass the limit by 12,
// and 5 more after the counter is emptied show the numbering going on.)
func TestQueueKeepsTheNewest(t *testing.T) {
	t.Parallel()
	n := newFakeNode(t, renderFor(t, reportRecipe, "pi", Options{BuildID: "b1", ReportKey: testReportKey}))
	n.activate(t)
	script := filepath.Join(t.TempDir(), "statuses.sh")
	body := `ROOT=$PIBAKE_ROOT BOOT=$PIBAKE_BOOT LOG=/dev/null PIBAKE_SCRIPT=test
. "$ROOT/etc/pibake/node.env"
. "$ROOT/usr/local/lib/pibake/lib.sh"
i=0
while [ $i -lt "$ROUNDS" ]; do i=$((i + 1)); status k3s-active waiting "round $i" >/dev/null; done
`
	if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := n.run(t, script, "ROUNDS=110"); code != 0 {
		t.Fatalf("statuses.sh exited %d", code)
	}
	queued, _ := filepath.Glob(filepath.Join(n.root, "var/lib/pibake/reports/[0-9]*.json"))
	if len(queued) != 100 {
		t.Fatalf("%d records queued; want the newest 100", len(queued))
	}
	// 2 from the activation and 110: the oldest 12 went.
	first, _ := status.Parse([]byte(n.read(t, strings.TrimPrefix(queued[0], n.root+"/"))))
	last, _ := status.Parse([]byte(n.read(t, strings.TrimPrefix(queued[99], n.root+"/"))))
	if first == nil || last == nil || first.Reason != "round 11" || last.Reason != "round 110" {
		t.Errorf("queue holds %+v … %+v; want rounds 11 to 110", first, last)
	}
	for i, q := range queued {
		if r, _ := status.Parse([]byte(n.read(t, strings.TrimPrefix(q, n.root+"/")))); r == nil || r.Reason != fmt.Sprintf("round %d", i+11) {
			t.Fatalf("queued record %d is %+v; want round %d (in order)", i, r, i+11)
		}
	}
	// A counter a full disk left empty: the next record still sorts last.
	n.write(t, "var/lib/pibake/reports/seq", "")
	if code := n.run(t, script, "ROUNDS=5"); code != 0 {
		t.Fatalf("statuses.sh exited %d", code)
	}
	queued, _ = filepath.Glob(filepath.Join(n.root, "var/lib/pibake/reports/[0-9]*.json"))
	if last, _ := status.Parse([]byte(n.read(t, strings.TrimPrefix(queued[len(queued)-1], n.root+"/")))); last == nil || last.Reason != "round 5" || len(queued) != 100 {
		t.Errorf("after an empty counter the queue ends with %+v (%d records); want round 5 of the second run last", last, len(queued))
	}
	if got := strings.TrimSpace(n.read(t, "var/lib/pibake/reports/seq")); got != "117" { // 2 from the activation, 110, then 5 more
		t.Errorf("counter after an empty one = %q; want 117 (numbering went on past the queued names)", got)
	}
}

// TestRegistrationChecks: the registered stage follows what k3s shows:
// an agent whose server never answers stays activating (k3s is
// Type=notify), a server whose node is not listed yet is waiting; neither
// is a failure, and the first boot still finishes.
func TestRegistrationChecks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, host string
		env        []string
		want       string
	}{
		{name: "server registered", host: "cp-1", want: "k3s-active ok\nregistered ok\n"},
		{name: "server API down", host: "cp-1", env: []string{"K3S_API=down"}, want: "k3s-active ok\nregistered waiting\n"},
		{name: "server node not listed", host: "cp-1", env: []string{"K3S_NODE=absent"}, want: "k3s-active ok\nregistered waiting\n"},
		{name: "agent registered", host: "worker-1", want: "k3s-active ok\nregistered ok\n"},
		{name: "agent kubelet down", host: "worker-1", env: []string{"KUBELET=down"}, want: "k3s-active ok\nregistered waiting\n"},
		{name: "agent never ready", host: "worker-1", env: []string{"K3S_STATE=activating"}, want: "k3s-active waiting\npackages ok\n"},
		// The waits see a change: active on the 3rd look, listed on the 3rd.
		{name: "server ready during the waits", host: "cp-1", env: []string{"K3S_ACTIVE_AFTER=2", "K3S_LISTED_AFTER=2", "PIBAKE_POLL=1", "PIBAKE_K3S_WAIT=30", "PIBAKE_REGISTER_WAIT=30"},
			want: "k3s-active ok\nregistered ok\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newFakeNode(t, renderFor(t, haRecipe, tt.host, Options{BuildID: "b1"}))
			n.activate(t)
			if code := n.firstboot(t, tt.env...); code != 0 {
				t.Fatalf("firstboot exited %d:\n%s", code, n.read(t, "var/log/pibake/firstboot.log"))
			}
			if h := n.history(t); !strings.Contains(h, "k3s-start ok\n"+tt.want) {
				t.Errorf("status history:\n%s\nwant after k3s-start:\n%s", h, tt.want)
			}
			s := n.status(t)
			registered := !strings.Contains(tt.want, "waiting")
			if s.Stage != status.StageDone || strings.Contains(s.Reason, "yet") == registered {
				t.Errorf("last status = %+v; want done, saying so when k3s is not registered", s)
			}
			if n.exists("etc/systemd/system/pibake-report.service") {
				t.Error("a node without a report URL got the reporter")
			}
		})
	}
}
