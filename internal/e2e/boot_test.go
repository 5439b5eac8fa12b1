//go:build e2e

// Package e2e boots images built by pibake under QEMU, with real systemd,
// and checks that first boot does what the README says. Run it with
// `make e2e`; it needs root (debootstrap), qemu-system-aarch64 and
// qemu-user-static, and takes several minutes.
package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/testimage"
	"github.com/pibake/pibake/recipes"
)

const e2eToken = "e2e-qemu-cluster-token-0123456789"

// lookalike returns a bootable Raspberry Pi OS look-alike image plus the
// kernel and initrd to boot it, built once and cached under a key derived
// from the rootfs script.
func lookalike(t *testing.T) (img, kernel, initrd string) {
	t.Helper()
	script, err := filepath.Abs("../../testdata/e2e/mkrootfs.sh")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	halt, _ := os.ReadFile(filepath.Join(filepath.Dir(script), "e2e-halt.sh"))
	sum := sha256.Sum256(append(src, halt...))
	cacheRoot := os.Getenv("PIBAKE_E2E_CACHE")
	if cacheRoot == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		cacheRoot = filepath.Join(d, "pibake-e2e")
	}
	dir := filepath.Join(cacheRoot, hex.EncodeToString(sum[:8]))
	img = filepath.Join(dir, "lookalike.img")
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	if _, err := os.Stat(img); err == nil {
		return img, kernel, initrd
	}
	t.Logf("building the look-alike root file system in %s (debootstrap, several minutes)", dir)
	cmd := exec.Command("sh", script, dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("mkrootfs.sh: %v", err)
	}
	spec := testimage.Bookworm()
	spec.RootMiB = 1536
	spec.RootDir = filepath.Join(dir, "rootfs")
	if err := testimage.Build(img+".tmp", spec); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(img+".tmp", img); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(spec.RootDir) // the image holds it now
	return img, kernel, initrd
}

// airgapFiles writes the stand-ins that travel as the air-gap payload:
// k3s itself cannot be downloaded here, so install.sh records how it was
// called and installs a k3s unit that merely runs.
func airgapFiles(t *testing.T, dir string) {
	t.Helper()
	install := `#!/bin/sh
{
  echo "args=$*"
  env | grep -E '^(INSTALL_K3S_|K3S_)' | sort
} >/var/log/e2e-install.log
cat >/etc/systemd/system/k3s-stand-in.service <<UNIT
[Unit]
Description=stand-in for k3s
[Service]
ExecStart=/bin/sleep infinity
UNIT
ln -sf /etc/systemd/system/k3s-stand-in.service /etc/systemd/system/k3s.service
ln -sf /etc/systemd/system/k3s-stand-in.service /etc/systemd/system/k3s-agent.service
systemctl daemon-reload
`
	files := map[string]string{
		"install.sh":                      install,
		"k3s-arm64":                       "#!/bin/sh\necho k3s stand-in\n",
		"k3s-airgap-images-arm64.tar.zst": "not really images\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

const recipeSrc = `
cluster {
  token = "` + e2eToken + `"
  airgap {
    k3s_binary     = "k3s-arm64"
    images         = "k3s-airgap-images-arm64.tar.zst"
    install_script = "install.sh"
  }
}
node "e2e-server" {
  role = "server"
  ip   = "10.77.0.10/24"
  ssh  = true
  user {
    name                = "ops"
    ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn4lC6ZnWsLqtCQ8ki7SIqNvLZPc0xk1pB9uJZbAFkf ops@e2e"]
  }
}
node "e2e-agent" {
  role   = "agent"
  server = "10.99.0.1" # nothing listens there: the agent must wait, not fail
}
`

// bootUntilOff boots img until the guest powers off without rebooting,
// re-reading cmdline.txt from the image before every boot as the Pi's
// firmware does. It returns the serial logs of the boots.
func bootUntilOff(t *testing.T, img, kernel, initrd string, maxBoots int) []string {
	t.Helper()
	var logs []string
	for boot := 1; boot <= maxBoots; boot++ {
		im, err := diskimg.Open(img, false)
		if err != nil {
			t.Fatal(err)
		}
		cmdline, err := im.ReadBootFile("cmdline.txt")
		im.Close()
		if err != nil {
			t.Fatal(err)
		}
		appendArgs := strings.TrimSpace(string(cmdline)) + " console=ttyAMA0"
		logPath := img + fmt.Sprintf(".boot%d.log", boot)
		if d := os.Getenv("PIBAKE_E2E_LOGS"); d != "" {
			os.MkdirAll(d, 0o755)
			logPath = filepath.Join(d, filepath.Base(logPath))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		cmd := exec.CommandContext(ctx, "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "2048",
			"-nographic", "-nic", "none", "-no-reboot",
			"-drive", "file="+img+",if=virtio,format=raw",
			"-kernel", kernel, "-initrd", initrd, "-append", appendArgs)
		out, _ := os.Create(logPath)
		cmd.Stdout, cmd.Stderr = out, out
		start := time.Now()
		err = cmd.Run()
		timedOut := ctx.Err() == context.DeadlineExceeded
		cancel()
		out.Close()
		serial, _ := os.ReadFile(logPath)
		logs = append(logs, string(serial))
		t.Logf("boot %d: %s, %v (cmdline: %s)", boot, time.Since(start).Round(time.Second), err, strings.TrimSpace(string(cmdline)))
		if timedOut {
			t.Fatalf("boot %d timed out; the serial log ends:\n%s", boot, tail(string(serial), 60))
		}
		// A guest that rebooted comes back for another boot; one that
		// powered off is done. The serial log tells them apart.
		if strings.Contains(string(serial), "reboot: Power down") {
			return logs
		}
	}
	t.Fatalf("no power-off after %d boots; the last serial log ends:\n%s", maxBoots, tail(logs[len(logs)-1], 60))
	return logs
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rootFile reads a file from the image's root file system with debugfs,
// with its mode.
func rootFile(t *testing.T, img, path string) (content string, mode string, ok bool) {
	t.Helper()
	spec := testimage.Bookworm()
	dev := fmt.Sprintf("%s?offset=%d", img, spec.RootStart()*512)
	out, err := exec.Command("debugfs", "-R", "cat "+path, dev).Output()
	if err != nil {
		return "", "", false
	}
	stat, _ := exec.Command("debugfs", "-R", "stat "+path, dev).Output()
	if m := regexp.MustCompile(`Mode:\s+(\d+)`).FindSubmatch(stat); m != nil {
		mode = string(m[1])
	}
	if strings.Contains(string(stat), "File not found") {
		return "", "", false
	}
	return string(out), mode, true
}

func TestFirstBoot(t *testing.T) {
	for _, tool := range []string{"qemu-system-aarch64", "debootstrap", "debugfs"} {
		testimage.Tool(t, tool)
	}
	baseImg, kernel, initrd := lookalike(t)
	dir := t.TempDir()
	airgapFiles(t, dir)
	recipePath := filepath.Join(dir, "e2e.hcl")
	os.WriteFile(recipePath, []byte(recipeSrc), 0o600)
	r, diags := recipes.Load(hclparse.NewParser(), recipePath)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	out := filepath.Join(dir, "out")
	_, err := builder.Build(context.Background(), r, builder.Options{
		OutDir: out, Image: baseImg, Version: "e2e", Logf: t.Logf,
		Base: base.Options{Cache: base.Cache{Dir: filepath.Join(dir, "cache")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("PIBAKE_E2E_BREAK") == "activator-args" {
		breakActivator(t, filepath.Join(out, "e2e-server.img"))
	}
	// What the OS's own first boot leaves of the shipped cmdline.
	origCmdline := strings.NewReplacer(" init=/usr/lib/raspberrypi-sys-mods/firstboot", "", " quiet", "").Replace(strings.TrimSpace(testimage.Bookworm().Cmdline()))

	t.Run("server", func(t *testing.T) {
		img := filepath.Join(out, "e2e-server.img")
		logs := bootUntilOff(t, img, kernel, initrd, 5)
		checkCommon(t, img, "e2e-server", origCmdline, logs)
		cfg, mode, ok := rootFile(t, img, "/etc/rancher/k3s/config.yaml")
		if !ok || mode != "0600" || !strings.Contains(cfg, `token: "`+e2eToken+`"`) || !strings.Contains(cfg, `node-name: "e2e-server"`) || strings.Contains(cfg, "server:") {
			t.Errorf("config.yaml (mode %s):\n%s", mode, cfg)
		}
		install, _, _ := rootFile(t, img, "/var/log/e2e-install.log")
		for _, want := range []string{"INSTALL_K3S_EXEC=server", "INSTALL_K3S_SKIP_START=true", "INSTALL_K3S_SKIP_DOWNLOAD=true"} {
			if !strings.Contains(install, want) {
				t.Errorf("install.sh was not called with %s:\n%s", want, install)
			}
		}
		if _, _, ok := rootFile(t, img, "/var/lib/pibake/firstboot.done"); !ok {
			t.Fatal("no done-stamp on the server")
		}
		keys, mode, ok := rootFile(t, img, "/home/ops/.ssh/authorized_keys")
		if !ok || mode != "0600" || !strings.HasPrefix(keys, "ssh-ed25519 ") {
			t.Errorf("authorized_keys of the renamed user: %q mode %s", keys, mode)
		}
		// A further boot does not run the unit again.
		bootUntilOff(t, img, kernel, initrd, 1)
		fb, _, _ := rootFile(t, img, "/var/log/pibake/firstboot.log")
		if n := strings.Count(fb, "firstboot: start:"); n != 1 {
			t.Errorf("the first-boot unit ran %d times; want exactly once:\n%s", n, fb)
		}
	})

	t.Run("agent", func(t *testing.T) {
		img := filepath.Join(out, "e2e-agent.img")
		logs := bootUntilOff(t, img, kernel, initrd, 5)
		checkCommon(t, img, "e2e-agent", origCmdline, logs)
		cfg, mode, ok := rootFile(t, img, "/etc/rancher/k3s/config.yaml")
		if !ok || mode != "0600" || !strings.Contains(cfg, `server: "https://10.99.0.1:6443"`) || strings.Contains(cfg, "cluster-init") {
			t.Errorf("agent config.yaml (mode %s):\n%s", mode, cfg)
		}
		fb, _, _ := rootFile(t, img, "/var/log/pibake/firstboot.log")
		if strings.Count(fb, "not answering yet") < 3 || strings.Contains(fb, "FAILED") {
			t.Errorf("the agent did not wait and retry:\n%s", fb)
		}
	})
}

// checkCommon asserts what every node shares.
func checkCommon(t *testing.T, img, host, origCmdline string, logs []string) {
	t.Helper()
	im, err := diskimg.Open(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	cmdline, _ := im.ReadBootFile("cmdline.txt")
	if got, want := strings.TrimSpace(string(cmdline)), origCmdline+" cgroup_memory=1 cgroup_enable=memory"; got != want {
		t.Errorf("cmdline.txt after first boot = %q; want %q (the activator removes exactly its own arguments)", got, want)
	}
	for _, secret := range []string{"pibake/k3s-config.yaml", "pibake/pibake-eth0.nmconnection", "pibake/authorized_keys"} {
		if _, err := im.ReadBootFile(secret); err == nil {
			t.Errorf("%s is still on the boot partition", secret)
		}
	}
	hostname, _, _ := rootFile(t, img, "/etc/hostname")
	if strings.TrimSpace(hostname) != host {
		t.Errorf("/etc/hostname = %q; want %s", hostname, host)
	}
	activate, _, _ := rootFile(t, img, "/var/log/pibake/activate.log")
	if n := strings.Count(activate, "activate: start"); n != 1 {
		t.Errorf("the activator ran %d times; want once:\n%s", n, activate)
	}
	if id, _, _ := rootFile(t, img, "/etc/machine-id"); strings.TrimSpace(id) == "" {
		t.Log("machine-id still empty (systemd commits it on a later boot)")
	}
	// The unit started after network-online.target was reached: the
	// harness's helper recorded both monotonic timestamps before power-off.
	units, _, _ := rootFile(t, img, "/var/log/e2e-units.txt")
	var netAt, unitAt int64
	for _, line := range strings.Split(units, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "ActiveEnterTimestampMonotonic":
			fmt.Sscan(v, &netAt)
		case "InactiveExitTimestampMonotonic":
			fmt.Sscan(v, &unitAt)
		}
	}
	if netAt == 0 || unitAt == 0 || unitAt < netAt {
		t.Errorf("pibake-firstboot started at %d µs, network-online.target reached at %d µs; want after:\n%s", unitAt, netAt, units)
	}
	if !strings.Contains(strings.Join(logs, "\n"), "pibake-firstboot") {
		t.Error("the serial console never shows the pibake first-boot unit")
	}
	fb, _, _ := rootFile(t, img, "/var/log/pibake/firstboot.log")
	if !strings.Contains(fb, "apt-get update") || !strings.Contains(fb, "attempt 1/5 failed") {
		t.Errorf("firstboot.log shows no apt-get update retries:\n%s", fb)
	}
}

// breakActivator disables the activator's cmdline clean-up, to prove the
// test notices (PIBAKE_E2E_BREAK=activator-args make e2e must fail).
func breakActivator(t *testing.T, img string) {
	t.Helper()
	im, err := diskimg.Open(img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	act, err := im.ReadBootFile("pibake/activate.sh")
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(act), `if (!($i in skip))`, `if (1)`, 1)
	if err := im.Apply(diskimg.Edit{Files: []diskimg.File{{Path: "pibake/activate.sh", Data: []byte(broken)}}}); err != nil {
		t.Fatal(err)
	}
	t.Log("PIBAKE_E2E_BREAK=activator-args: the activator no longer removes its arguments")
}
