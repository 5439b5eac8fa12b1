//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/builder/diskimg"
)

// The guests' network: QEMU's user network restricted to one forwarded
// port. The LAN is 192.168.1.0/24 as in recipes/examples/lab.hcl, the
// gateway .1 is QEMU's, DHCP hands out .100 and up, and 192.168.1.2:80
// (deb.debian.org in the look-alike's /etc/hosts) is forwarded to the
// test's package mirror on loopback. Nothing else leaves the VM.
const (
	guestNet    = "192.168.1.0/24"
	guestHost   = "192.168.1.1"
	mirrorGuest = "192.168.1.2"
	reportPort  = 8470 // on mirrorGuest: the e2e recipe's report URL
	// k3sServerGuest:6443 is the stand-in k3s server e2e-wifi joins.
	k3sServerGuest = "192.168.1.4" // not .3: slirp's DNS is there
)

// mirror serves a flat apt repository on loopback with the packages the
// test recipes install: small real .deb files built with dpkg-deb.
// k3sServer stands in for a k3s server's supervisor port in what an agent
// and pibake's first boot ask before joining: /ping answers "pong" without
// credentials (k3s pkg/server/router.go), anything else is refused as
// k3s refuses an anonymous request.
func k3sServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "pong")
			return
		}
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func mirror(t *testing.T, packages ...string) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	var index strings.Builder
	for _, name := range packages {
		pkg := filepath.Join(dir, "build", name)
		os.MkdirAll(filepath.Join(pkg, "DEBIAN"), 0o755)
		os.MkdirAll(filepath.Join(pkg, "usr", "share", "e2e"), 0o755)
		os.WriteFile(filepath.Join(pkg, "DEBIAN", "control"), []byte(fmt.Sprintf(
			"Package: %s\nVersion: 99.0-e2e\nArchitecture: all\nMaintainer: pibake e2e <e2e@pibake.invalid>\nDescription: stand-in for %s in the QEMU test\n", name, name)), 0o644)
		os.WriteFile(filepath.Join(pkg, "usr", "share", "e2e", name), []byte(name+" installed by the e2e mirror\n"), 0o644)
		deb := filepath.Join(dir, name+"_99.0-e2e_all.deb")
		if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkg, deb).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb: %v\n%s", err, out)
		}
		b, err := os.ReadFile(deb)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		fmt.Fprintf(&index, "Package: %s\nVersion: 99.0-e2e\nArchitecture: all\nMaintainer: pibake e2e <e2e@pibake.invalid>\nFilename: ./%s\nSize: %d\nSHA256: %s\nDescription: stand-in for %s in the QEMU test\n\n",
			name, filepath.Base(deb), len(b), hex.EncodeToString(sum[:]), name)
	}
	os.WriteFile(filepath.Join(dir, "Packages"), []byte(index.String()), 0o644)
	sum := sha256.Sum256([]byte(index.String()))
	release := fmt.Sprintf("Origin: pibake-e2e\nLabel: pibake-e2e\nDate: %s\nSHA256:\n %s %d Packages\n",
		time.Now().UTC().Format(time.RFC1123), hex.EncodeToString(sum[:]), index.Len())
	os.WriteFile(filepath.Join(dir, "Release"), []byte(release), 0o644)
	files := http.StripPrefix("/e2e/", http.FileServer(http.Dir(dir)))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Logf("mirror: %s %s", r.Method, r.URL.Path)
		files.ServeHTTP(w, r)
	}))
	srv.Listener.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// machine is one node's VM.
type machine struct {
	la  lookalike
	img string
	// mirror is the host address the guest's 192.168.1.2:80 reaches.
	mirror string
	// report, when set, is the host address of the pibake watch the
	// guest's 192.168.1.2:8470 (the recipe's report URL) reaches.
	report string
	// k3sServer, when set, is the host address the guest's
	// 192.168.1.4:6443 reaches: a stand-in k3s server.
	k3sServer string
	// appendArgs go after cmdline.txt on the kernel command line, as the
	// firmware adds its own (console=ttyAMA0 here).
	appendArgs string
	// usb attaches the card as a USB disk (QEMU's usb-storage, 46f4:0001,
	// on an xHCI controller), as a USB SSD is, instead of virtio.
	usb  bool
	logs string
}

// slowMachineArgs give systemd the time an emulated Pi on a busy host
// needs: udev's coldplug can start two minutes into the boot there, and a
// device not seen within systemd's default 90 s fails every mount and
// service that needs it (seen: /boot/firmware's device timed out, and with
// it cloud-init). A Pi finds its boot partition within seconds.
// systemd.default_device_timeout_sec= came with systemd 254 (Trixie has
// 257); Bookworm's 252 ignores it and times a device's job with the start
// timeout instead, so that one is raised too (seen: a USB disk's boot
// partition not seen within 90 s on Bookworm under load, and the boot
// ending in the emergency shell).
const slowMachineArgs = "systemd.default_device_timeout_sec=900 systemd.default_timeout_start_sec=900"

// boot is one power-on of a machine.
type boot struct {
	n        int
	cmdline  string // cmdline.txt as the firmware read it
	serial   string
	duration time.Duration
	poweroff bool
}

// bootUntilOff powers the machine on again and again, reading cmdline.txt
// from the image before every boot as the Pi's firmware does, until the
// guest powers off instead of rebooting.
func (m *machine) bootUntilOff(t *testing.T, maxBoots int) []boot {
	t.Helper()
	var boots []boot
	for n := 1; n <= maxBoots; n++ {
		b := m.bootOnce(t, len(boots)+1)
		boots = append(boots, b)
		if b.poweroff {
			return boots
		}
	}
	t.Fatalf("no power-off after %d boots; the last serial log ends:\n%s", maxBoots, tail(boots[len(boots)-1].serial, 60))
	return boots
}

func (m *machine) bootOnce(t *testing.T, n int) boot {
	t.Helper()
	im, err := diskimg.Open(m.img, false)
	if err != nil {
		t.Fatal(err)
	}
	cmdline, err := im.ReadBootFile("cmdline.txt")
	im.Close()
	if err != nil {
		t.Fatal(err)
	}
	b := boot{n: n, cmdline: strings.TrimSpace(string(cmdline))}
	logPath := filepath.Join(m.logs, fmt.Sprintf("%s.boot%d.log", filepath.Base(m.img), n))
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	netdev := fmt.Sprintf("user,id=lan,restrict=on,net=%s,host=%s,dhcpstart=192.168.1.100,guestfwd=tcp:%s:80-tcp:%s",
		guestNet, guestHost, mirrorGuest, m.mirror)
	// pibake watch and the stand-in k3s server get a connection of their
	// own per guest connection, through the bridge (see TestMain).
	if m.report != "" {
		netdev += fmt.Sprintf(",guestfwd=tcp:%s:%d-%s", mirrorGuest, reportPort, bridgeCommand(t, m.report))
	}
	if m.k3sServer != "" {
		netdev += fmt.Sprintf(",guestfwd=tcp:%s:6443-%s", k3sServerGuest, bridgeCommand(t, m.k3sServer))
	}
	disk := []string{"-drive", "file=" + m.img + ",if=virtio,format=raw"}
	if m.usb {
		disk = []string{"-device", "qemu-xhci,id=xhci", "-drive", "file=" + m.img + ",if=none,id=usbdisk,format=raw",
			"-device", "usb-storage,bus=xhci.0,drive=usbdisk"}
	}
	args := append([]string{"-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1536",
		"-nographic", "-no-reboot", "-netdev", netdev, "-device", "virtio-net-pci,netdev=lan,romfile=", "-device", "virtio-rng-pci"}, disk...)
	cmd := exec.CommandContext(ctx, "qemu-system-aarch64", append(args,
		"-kernel", m.la.kernel, "-initrd", m.la.initrd, "-append", b.cmdline+" console=ttyAMA0 "+slowMachineArgs+m.appendArgs)...)
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err = cmd.Run()
	out.Close()
	b.duration = time.Since(start).Round(time.Second)
	serial, _ := os.ReadFile(logPath)
	b.serial = string(serial)
	t.Logf("%s boot %d: %s, %v (cmdline: %s)", filepath.Base(m.img), n, b.duration, err, b.cmdline)
	if ctx.Err() == context.DeadlineExceeded {
		t.Fatalf("boot %d timed out; the serial log ends:\n%s", n, tail(b.serial, 60))
	}
	if err != nil && !strings.Contains(b.serial, "Booting Linux") {
		t.Fatalf("qemu-system-aarch64 did not start the kernel: %v\n%s", err, tail(b.serial, 20))
	}
	// A guest that rebooted comes back for another boot; one that powered
	// off is done. The serial log tells them apart.
	b.poweroff = strings.Contains(b.serial, "reboot: Power down")
	return b
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
