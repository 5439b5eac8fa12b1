package firstboot

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The behaviour tests run the real activator and first-boot script with sh
// against a temporary root directory. Stub commands on PATH record what the
// scripts ran (with the environment that matters) and fail on cue.

// stubs are written into the test's bin directory. Each appends one line
// to $STUB_LOG. A stub named in $<NAME>_FAILS fails that many times first.
var stubs = map[string]string{
	"apt-get":     `record apt-get "$@"; maybe_fail APT_GET; exit 0`,
	"apt-cache":   `record apt-cache "$@"; [ "${APT_CACHE_HAS:-0}" = 1 ]`,
	"systemctl":   `record systemctl "$@"; exit 0`,
	"getent":      `echo "$2:x:1000:1000::/home/$2:/bin/sh"`,
	"chown":       `record chown "$@"; exit 0`,
	"modprobe":    `record modprobe "$@"; exit 0`,
	"hostnamectl": `record hostnamectl "$@"; exit 0`,
	"curl": `record curl "$@"
case "$*" in
*/ping*) maybe_fail CURL_PING; exit 0 ;;
esac
# A download: the stand-in install script.
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

// fakeNode is one node's temporary root with its payload on the boot
// partition, as the builder would write it.
type fakeNode struct {
	root, stubDir, log string
	env                []string
}

func newFakeNode(t *testing.T, p Payload) *fakeNode {
	t.Helper()
	dir := t.TempDir()
	n := &fakeNode{root: filepath.Join(dir, "root"), stubDir: filepath.Join(dir, "stubs"), log: filepath.Join(dir, "commands.log")}
	boot := filepath.Join(n.root, "boot", "firmware")
	for _, d := range []string{boot, filepath.Join(n.root, "etc"), filepath.Join(n.root, "home", "ops"),
		filepath.Join(n.root, "run", "systemd", "timesync"), filepath.Join(n.root, "usr", "share", "zoneinfo", "Europe"), n.stubDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(n.root, "etc", "hostname"):                              "raspberrypi\n",
		filepath.Join(n.root, "etc", "hosts"):                                 "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n127.0.1.1\traspberrypi\n",
		filepath.Join(n.root, "run", "systemd", "timesync", "synchronized"):   "",
		filepath.Join(n.root, "usr", "share", "zoneinfo", "Europe", "Berlin"): "TZif",
		filepath.Join(boot, "cmdline.txt"):                                    originalCmdline + " " + strings.Join(p.CmdlineAdd, " ") + "\n",
		filepath.Join(n.stubDir, "install.sh"):                                installStub,
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
		files[filepath.Join(boot, filepath.FromSlash(f.Path))] = string(data)
	}
	for name, content := range files {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range stubs {
		if err := os.WriteFile(filepath.Join(n.stubDir, name), []byte(stubPrelude+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.env = append(os.Environ(),
		"PATH="+n.stubDir+":"+os.Getenv("PATH"),
		"PIBAKE_ROOT="+n.root, "PIBAKE_BOOT="+boot,
		"STUB_LOG="+n.log, "STUB_DIR="+n.stubDir,
		"PIBAKE_RETRY_DELAY=0", "PIBAKE_TIME_WAIT=0", "PIBAKE_BATCH_DELAY=0", "PIBAKE_SERVER_WAIT=30",
	)
	return n
}

// run runs a script from the fake root with extra environment; it returns
// whether it succeeded.
func (n *fakeNode) run(t *testing.T, script string, env ...string) bool {
	t.Helper()
	cmd := exec.Command("sh", script)
	cmd.Env = append(append([]string(nil), n.env...), env...)
	out, err := cmd.CombinedOutput()
	if len(out) > 0 {
		t.Logf("%s printed (it should log to a file instead):\n%s", filepath.Base(script), out)
	}
	return err == nil
}

func (n *fakeNode) activate(t *testing.T, env ...string) bool {
	return n.run(t, filepath.Join(n.root, "boot", "firmware", "pibake", "activate.sh"), env...)
}

func (n *fakeNode) firstboot(t *testing.T, env ...string) bool {
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
	n := newFakeNode(t, renderFor(t, haRecipe, "cp-1", Options{BuildID: "b1"}))
	if !n.activate(t) {
		t.Fatalf("activate failed:\n%s", n.read(t, "var/log/pibake/activate.log"))
	}
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

	// Second boot: apt update fails twice (retry path), then the install.
	if !n.firstboot(t, "APT_GET_FAILS=2") {
		t.Fatalf("firstboot failed:\n%s", n.read(t, "var/log/pibake/firstboot.log"))
	}
	cmds := n.commands(t)
	mustContain(t, "commands", cmds,
		"apt-get update --error-on=any\napt-get update --error-on=any\napt-get update --error-on=any\n",
		"install.sh EXEC=server SKIP_START=true VERSION=v1.31.4+k3s1 CHANNEL= SKIP_DOWNLOAD= args=--disable=traefik --kubelet-arg=max-pods=50\n",
		"systemctl start --no-block k3s\n")
	mustNotContain(t, "commands", cmds, "/ping") // the founding server waits for nobody
	mustContain(t, "firstboot.log", n.read(t, "var/log/pibake/firstboot.log"), "attempt 1/5 failed", "attempt 2/5 failed", "done")
	if !n.exists("var/lib/pibake/firstboot.done") {
		t.Error("no done-stamp after a successful first boot")
	}
}

func TestFirstbootAgent(t *testing.T) {
	n := newFakeNode(t, renderFor(t, haRecipe, "worker-7", Options{BuildID: "b1"}))
	if !n.activate(t) {
		t.Fatalf("activate failed:\n%s", n.read(t, "var/log/pibake/activate.log"))
	}
	cfg := n.read(t, "etc/rancher/k3s/config.yaml")
	mustContain(t, "agent config.yaml", cfg, `server: "https://192.168.1.10:6443"`, `token: "`+testAgentToken+`"`)
	mustNotContain(t, "agent config.yaml", cfg, testToken)
	// The server is not up for the first two pings; the package is missing.
	if !n.firstboot(t, "CURL_PING_FAILS=2", "APT_CACHE_HAS=0") {
		t.Fatalf("firstboot failed:\n%s", n.read(t, "var/log/pibake/firstboot.log"))
	}
	cmds := n.commands(t)
	mustContain(t, "commands", cmds,
		"apt-get -y -o Dpkg::Options::=--force-confold full-upgrade\n",
		"apt-cache show linux-modules-extra-raspi\n",
		"apt-get install -y --no-install-recommends vim open-iscsi\n",
		"curl -ksS --max-time 5 -o /dev/null https://192.168.1.10:6443/ping\n",
		"install.sh EXEC=agent SKIP_START=true VERSION=v1.31.4+k3s1",
		"systemctl start --no-block k3s-agent\n",
		"chown -R ops:")
	mustNotContain(t, "commands", cmds, "apt-get install -y linux-modules-extra-raspi")
	log := n.read(t, "var/log/pibake/firstboot.log")
	mustContain(t, "firstboot.log", log, "not answering yet", "linux-modules-extra-raspi is not available", "join batch 3")
	if got := n.read(t, "home/ops/.ssh/authorized_keys"); !strings.HasPrefix(got, "ssh-ed25519 ") || n.mode(t, "home/ops/.ssh/authorized_keys") != 0o600 {
		t.Errorf("authorized_keys = %q (%#o)", got, n.mode(t, "home/ops/.ssh/authorized_keys"))
	}
}

func TestFirstbootJoiningServerWithModulesExtra(t *testing.T) {
	n := newFakeNode(t, renderFor(t, haRecipe, "cp-2", Options{BuildID: "b1"}))
	if !n.activate(t) || !n.firstboot(t, "APT_CACHE_HAS=1") {
		t.Fatalf("activate/firstboot failed:\n%s", n.commands(t))
	}
	mustContain(t, "config.yaml", n.read(t, "etc/rancher/k3s/config.yaml"), `server: "https://192.168.1.10:6443"`, `agent-token: "`+testAgentToken+`"`)
	mustNotContain(t, "config.yaml", n.read(t, "etc/rancher/k3s/config.yaml"), "cluster-init")
	mustContain(t, "commands", n.commands(t), "/ping\n", "install.sh EXEC=server", "systemctl start --no-block k3s\n")
}

func TestFirstbootFailureIsRetriedNextBoot(t *testing.T) {
	n := newFakeNode(t, renderFor(t, singleRecipe, "pi", Options{BuildID: "b1"}))
	if !n.activate(t) {
		t.Fatal("activate failed")
	}
	// The installer fails once; the retry inside the run recovers.
	if !n.firstboot(t, "INSTALL_FAILS_ONCE=1") || !n.exists("var/lib/pibake/firstboot.done") {
		t.Fatalf("no done-stamp after a run that recovered:\n%s", n.read(t, "var/log/pibake/firstboot.log"))
	}
	mustContain(t, "firstboot.log", n.read(t, "var/log/pibake/firstboot.log"), "attempt 1/3 failed, retrying in 0s: sh ")
	mustContain(t, "commands", n.commands(t), "CHANNEL=stable", "curl -sSfL --max-time 60 -o ")

	// A run whose apt install fails for good leaves no done-stamp.
	m := newFakeNode(t, renderFor(t, haRecipe, "worker-1", Options{BuildID: "b1"}))
	if !m.activate(t) {
		t.Fatal("activate failed")
	}
	if m.firstboot(t, "APT_GET_FAILS=100") {
		t.Fatal("firstboot succeeded although every apt-get failed")
	}
	if m.exists("var/lib/pibake/firstboot.done") {
		t.Error("done-stamp written after a failure")
	}
	mustContain(t, "firstboot.log", m.read(t, "var/log/pibake/firstboot.log"), "FAILED", "will retry at next boot")
	if !m.firstboot(t) || !m.exists("var/lib/pibake/firstboot.done") {
		t.Errorf("the next boot did not finish the job:\n%s", m.read(t, "var/log/pibake/firstboot.log"))
	}
}

// TestActivateInterrupted cuts the activator short (its config directory
// cannot be made), then runs it again: the result is the same as one clean
// run, and running it a third time changes nothing.
func TestActivateInterrupted(t *testing.T) {
	n := newFakeNode(t, renderFor(t, singleRecipe, "wifi", Options{BuildID: "b1"}))
	blocker := filepath.Join(n.root, "etc", "rancher")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if n.activate(t) {
		t.Fatal("activate succeeded although /etc/rancher could not be made")
	}
	if !n.exists("boot/firmware/pibake/k3s-config.yaml") || !strings.Contains(n.read(t, "boot/firmware/cmdline.txt"), "systemd.run=") {
		t.Fatal("an interrupted activator already removed secrets or its arguments")
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if !n.activate(t) {
		t.Fatalf("second activate failed:\n%s", n.read(t, "var/log/pibake/activate.log"))
	}
	cmdline := n.read(t, "boot/firmware/cmdline.txt")
	want := originalCmdline + " cgroup_memory=1 cgroup_enable=memory cfg80211.ieee80211_regdom=DE\n"
	if cmdline != want {
		t.Errorf("cmdline.txt = %q; want %q", cmdline, want)
	}
	wifi := n.read(t, "etc/NetworkManager/system-connections/pibake-wifi.nmconnection")
	mustContain(t, "wifi keyfile", wifi, "ssid=lab net\n", "psk="+testPSK+"\n", "address1=10.0.0.20/24\n")
	if !n.activate(t) {
		t.Fatal("third activate failed")
	}
	if got := n.read(t, "boot/firmware/cmdline.txt"); got != want {
		t.Errorf("a repeated activate changed cmdline.txt to %q", got)
	}
	if n.read(t, "etc/rancher/k3s/config.yaml") == "" || n.read(t, "etc/hostname") != "wifi\n" {
		t.Error("a repeated activate lost installed files")
	}
}

func TestAirgapInstall(t *testing.T) {
	n := newFakeNode(t, renderFor(t, airgapRecipe, "pi", Options{BuildID: "b1"}))
	if !n.activate(t) || !n.firstboot(t) {
		t.Fatalf("activate/firstboot failed:\n%s", n.commands(t))
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
