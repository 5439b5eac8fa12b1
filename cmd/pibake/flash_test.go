package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/testimage"
)

// TestFlashCommand runs pibake flash as a user would: a dry run writes
// nothing; plain files need no confirmation and come out as the built
// images; a built .img and .img.xz flash by their .bmap; a loop device is
// refused as a fixed disk without --allow-fixed and, stdin not being a
// terminal, without --yes. No secret is ever printed.
func TestFlashCommand(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	base := testimage.For(t, buildtest.Small()) // flashing is byte-for-byte whatever the layout: the smallest image
	dir := t.TempDir()
	const token = "flash-cli-test-token-0123456789"
	recipe := filepath.Join(dir, "lab.hcl")
	src := fmt.Sprintf("image {\n  source = %q\n}\ncluster {\n  token = %q\n}\nnode \"srv\" {\n  role = \"server\"\n  ip   = \"192.168.7.10/24\"\n  ssh  = true\n  user {\n    name = \"ops\"\n    ssh_authorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn4lC6ZnWsLqtCQ8ki7SIqNvLZPc0xk1pB9uJZbAFkf ops@lab\"]\n  }\n}\nnode \"agent\" {\n  role = \"agent\"\n}\n", base, token)
	if err := os.WriteFile(recipe, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	out, cache := filepath.Join(dir, "out"), filepath.Join(dir, "cache")
	pibake := func(args ...string) (string, string, int) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append(args, "--cache", cache, "-q"), &stdout, &stderr)
		if strings.Contains(stdout.String()+stderr.String(), token) {
			t.Errorf("pibake %s printed the token", strings.Join(args, " "))
		}
		return stdout.String(), stderr.String(), code
	}
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")

	// A file already there (here the recipe, named by mistake) is asked
	// about like a device: without a terminal, only with --yes.
	stdout, stderr, code := pibake("flash", recipe, "srv="+recipe, "--out", out)
	if code != exitFailure || !strings.Contains(stderr, recipe+"  srv     plain file, ") || !strings.Contains(stderr, "there now") || !strings.Contains(stderr, "not on a terminal: pass --yes to confirm overwriting these devices and files") {
		t.Errorf("flash over an existing file: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if got, _ := os.ReadFile(recipe); string(got) != src {
		t.Fatalf("flash without --yes overwrote %s", recipe)
	}

	stdout, stderr, code = pibake("flash", recipe, "srv="+a, "agent="+b, "--out", out, "--dry-run")
	if code != exitOK || stdout != "" || !strings.Contains(stderr, "plain file") || !strings.Contains(stderr, "dry run: nothing was written") {
		t.Errorf("flash --dry-run: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if _, err := os.Stat(a); err == nil {
		t.Errorf("flash --dry-run wrote %s", a)
	}

	stdout, stderr, code = pibake("flash", recipe, "srv="+a, "agent="+b, "--out", out)
	if code != exitOK || strings.Count(stdout, "\n") != 2 || !strings.Contains(stderr, "verified") {
		t.Fatalf("flash to files: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if _, stderr, code := pibake("build", recipe, "--out", out, "--compress"); code != exitOK {
		t.Fatalf("build: exit %d: %s", code, stderr)
	}
	sums, _ := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		f := strings.Split(line, "\t") // target, node, sha256
		if len(f) != 3 || !strings.Contains(string(sums), f[2]+"  "+f[1]+".img\n") {
			t.Errorf("flash printed %q; SHA256SUMS:\n%s", line, sums)
		}
	}
	testimage.Cmp(t, a, filepath.Join(out, "srv.img"))
	testimage.Cmp(t, b, filepath.Join(out, "agent.img"))

	// A built image, and its .img.xz, by their block maps.
	for _, img := range []string{"srv.img", "srv.img.xz"} {
		target := filepath.Join(dir, "from-"+img)
		stdout, stderr, code := pibake("flash", filepath.Join(out, img), target)
		if code != exitOK || !strings.Contains(string(sums), strings.Split(strings.TrimSpace(stdout), "\t")[len(strings.Split(stdout, "\t"))-1]) {
			t.Errorf("flash %s: exit %d\nstdout:\n%s\nstderr:\n%s", img, code, stdout, stderr)
		}
		testimage.Cmp(t, target, filepath.Join(out, "srv.img"))
	}
	// An .img.xz without its .bmap beside it (*.img.xz is never committed:
	// made here).
	lone := filepath.Join(dir, "lone", "srv.img.xz")
	os.MkdirAll(filepath.Dir(lone), 0o755)
	if xz, err := os.ReadFile(filepath.Join(out, "srv.img.xz")); err != nil || os.WriteFile(lone, xz, 0o600) != nil {
		t.Fatal(err)
	}
	_, stderr, code = pibake("flash", lone, filepath.Join(dir, "never.img"))
	if want := "pibake flash: " + lone + " has no block map " + strings.TrimSuffix(lone, ".xz") + ".bmap beside it; flash the .img, or rebuild with pibake build (it writes the .bmap)\n"; code != exitFailure || stderr != want {
		t.Errorf("flash of an .img.xz without .bmap: exit %d\n%s\nwant:\n%s", code, stderr, want)
	}
	m, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
	if n := strings.Count(string(m), `"result": "verified"`); n != 4 {
		t.Errorf("manifest.json records %d verified flashes; want 4:\n%s", n, m)
	}
	// Each with the build id of what it wrote, the recipe's nodes and the
	// built srv.img alike: pibake watch tells the current build by it.
	if n := strings.Count(string(m), `"build": "`); n != 4 {
		t.Errorf("manifest.json records %d flashes with their build; want 4:\n%s", n, m)
	}

	if os.Geteuid() != 0 {
		testimage.Missing(t, "flashing a loop device needs root")
	}
	fi, _ := os.Stat(filepath.Join(out, "srv.img"))
	backing := filepath.Join(dir, "backing")
	usedFile(t, backing, fi.Size()) // a used card: the image's zeros must be written too
	lo, err := exec.Command(testimage.Tool(t, "losetup"), "--find", "--show", backing).CombinedOutput()
	if err != nil {
		testimage.Missing(t, fmt.Sprintf("losetup: %v: %s", err, lo))
	}
	dev := strings.TrimSpace(string(lo))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	for _, c := range []struct {
		flags []string
		code  int
		want  string
	}{
		{flags: nil, code: exitFailure, want: "is a fixed loop disk, not a removable or USB one; if you really mean it, name it with --allow-fixed"},
		{flags: []string{"--allow-fixed"}, code: exitFailure, want: "not on a terminal: pass --yes to confirm"},
		{flags: []string{"--allow-fixed", "--yes"}, code: exitOK, want: "verified"},
	} {
		_, stderr, code := pibake(append([]string{"flash", recipe, "srv=" + dev, "--out", out}, c.flags...)...)
		if code != c.code || !strings.Contains(stderr, c.want) || !strings.Contains(stderr, "loop device, serial "+backing) {
			t.Errorf("flash to %s %v: exit %d; want %d and %q\n%s", dev, c.flags, code, c.code, c.want, stderr)
		}
	}
	testimage.Cmp(t, dev, filepath.Join(out, "srv.img"))
}

// TestFlashOnATerminal runs pibake flash under a real pseudo-terminal
// (script(1)) to a loop device: it shows the device and asks; "no" writes
// nothing, "yes" writes it with a progress bar per device.
func TestFlashOnATerminal(t *testing.T) {
	scriptTool := testimage.Tool(t, "script")
	if os.Geteuid() != 0 {
		testimage.Missing(t, "flashing a loop device needs root")
	}
	base := testimage.For(t, buildtest.Small()) // flashing is byte-for-byte whatever the layout: the smallest image
	self, _ := os.Executable()
	dir := t.TempDir()
	recipe := filepath.Join(dir, "lab.hcl")
	os.WriteFile(recipe, []byte("cluster {\n  token = \"tty-flash-token-0123456789\"\n}\nnode \"srv\" {\n  role = \"server\"\n}\n"), 0o600)
	fi, _ := os.Stat(base)
	backing := filepath.Join(dir, "backing")
	os.WriteFile(backing, nil, 0o600)
	os.Truncate(backing, fi.Size())
	lo, err := exec.Command(testimage.Tool(t, "losetup"), "--find", "--show", backing).CombinedOutput()
	if err != nil {
		testimage.Missing(t, fmt.Sprintf("losetup: %v: %s", err, lo))
	}
	dev := strings.TrimSpace(string(lo))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	flash := func(answer string) (string, error) {
		args := []string{self, "flash", recipe, "srv=" + dev, "--image", base, "--cache", filepath.Join(dir, "cache"), "--out", filepath.Join(dir, "out"), "--allow-fixed"}
		cmd := exec.Command(scriptTool, "-qec", "stty cols 120 rows 40; "+strings.Join(args, " "), "/dev/null")
		cmd.Env = append(os.Environ(), "PIBAKE_TEST_AS_PIBAKE=1", "TERM=xterm", "NO_COLOR=1")
		cmd.Stdin = strings.NewReader(answer + "\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := flash("no")
	if err == nil || !strings.Contains(out, "Type yes to write") || !strings.Contains(out, "not confirmed; nothing was written") || !strings.Contains(out, "loop device, serial "+backing) {
		t.Errorf("answering no: %v\n%s", err, out)
	}
	if b := readHead(t, dev); b[510] == 0x55 {
		t.Errorf("answering no wrote %s", dev)
	}
	out, err = flash("yes")
	if err != nil || !strings.Contains(out, "srv → "+dev) || !strings.Contains(out, "\x1b[1A") || !strings.Contains(out, "verified") {
		t.Errorf("answering yes: %v\n%q", err, out)
	}
	if b := readHead(t, dev); b[510] != 0x55 || b[511] != 0xaa {
		t.Errorf("answering yes left %s without a partition table", dev)
	}
}

func readHead(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// usedFile writes a file of size bytes, all 0xA5.
func usedFile(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xa5}, int(size)), 0o600); err != nil {
		t.Fatal(err)
	}
}
