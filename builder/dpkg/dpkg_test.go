package dpkg

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/testimage"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testimage.Cleanup()
	os.Exit(code)
}

// TestReadMatchesDpkgQuery puts a realistic status file (multi-arch
// libc6 for arm64 and armhf, a Source with its own version, epochs, a
// removed package whose conffiles remain, an unpacked one, a held one)
// into the root file system of a Raspberry Pi OS-shaped image, reads it
// back through the ext4 reader, and compares the result with what dpkg's
// own dpkg-query makes of the same file.
func TestReadMatchesDpkgQuery(t *testing.T) {
	status, err := os.ReadFile("testdata/status")
	if err != nil {
		t.Fatal(err)
	}
	spec := testimage.Bookworm()
	spec.RootFiles = map[string]string{StatusPath: string(status)}
	img := testimage.For(t, spec)
	im, err := diskimg.Open(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	got, err := Read(im)
	if err != nil {
		t.Fatal(err)
	}
	want := dpkgQuery(t, status)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Read = %+v\nwant (dpkg-query) %+v", got, want)
	}
	if len(got) != 9 {
		t.Errorf("Read found %d installed packages; the fixture has 9", len(got))
	}
}

// dpkgQuery runs dpkg-query on a copy of status and returns the packages
// it says are installed, in its order.
func dpkgQuery(t *testing.T, status []byte) []Package {
	t.Helper()
	admin := t.TempDir()
	if err := os.WriteFile(filepath.Join(admin, "status"), status, 0o644); err != nil {
		t.Fatal(err)
	}
	testimage.Tool(t, "dpkg-query")
	out, err := testimage.Run(t, "dpkg-query", "--admindir", admin, "-W", "-f",
		`${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n`)
	if err != nil {
		t.Fatalf("dpkg-query: %v\n%s", err, out)
	}
	var pkgs []Package
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 6 {
			t.Fatalf("dpkg-query printed %q (a warning about the fixture?)", line)
		}
		if f[0] == "installed" {
			pkgs = append(pkgs, Package{Name: f[1], Version: f[2], Architecture: f[3], Source: f[4], SourceVersion: f[5]})
		}
	}
	return pkgs
}

func TestSource(t *testing.T) {
	tests := []struct {
		field, name, version string
		wantSrc, wantVer     string
	}{
		{field: "", name: "tzdata", version: "2025b-0", wantSrc: "tzdata", wantVer: "2025b-0"},
		{field: "glibc", name: "libc6", version: "2.36-9", wantSrc: "glibc", wantVer: "2.36-9"},
		{field: "openssl (3.0.17-1~deb12u2)", name: "libssl3", version: "3.0.17-1~deb12u2+b1", wantSrc: "openssl", wantVer: "3.0.17-1~deb12u2"},
		{field: "vim (2:9.0.1378-2)", name: "vim-tiny", version: "2:9.0.1378-2+b1", wantSrc: "vim", wantVer: "2:9.0.1378-2"},
		{field: "foo ()", name: "bar", version: "1", wantSrc: "foo", wantVer: "1"},
	}
	for _, tt := range tests {
		src, ver := source(tt.field, tt.name, tt.version)
		if src != tt.wantSrc || ver != tt.wantVer {
			t.Errorf("source(%q, %q, %q) = %q, %q; want %q, %q", tt.field, tt.name, tt.version, src, ver, tt.wantSrc, tt.wantVer)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, status, want string
	}{
		{name: "no version", status: "Package: a\nStatus: install ok installed\nArchitecture: all\n", want: `line 1: installed package "a" has no Version field`},
		{name: "no architecture", status: "\nPackage: a\nStatus: install ok installed\nVersion: 1\n", want: `line 2: installed package "a" has no Architecture field`},
		{name: "twice", status: "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\nPackage: a\nStatus: install ok installed\nVersion: 2\nArchitecture: all\n", want: "line 6: package a:all is listed twice (first at line 1)"},
		{name: "garbage", status: "Package: a\nthis is not a field\n", want: `line 2: "this is not a field" is not a field`},
		{name: "continuation first", status: " x\n", want: "line 1: continuation line before any field"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.status))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Parse = %v; want an error containing %q", tt.name, err, tt.want)
		}
	}
}

// TestParseSeparators: a line of only blanks separates paragraphs, and a
// status field is case-insensitive by name, as dpkg reads them.
func TestParseSeparators(t *testing.T) {
	got, err := Parse([]byte("package: a\nSTATUS: install ok installed\nVersion: 1\nArchitecture: all\n \t\nPackage: b\nStatus: purge ok not-installed\nArchitecture: all\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Package{{Name: "a", Version: "1", Architecture: "all", Source: "a", SourceVersion: "1"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse = %+v; want %+v", got, want)
	}
}

func TestReadMissing(t *testing.T) {
	// The release test images carry a dpkg database: this one's root holds
	// only os-release.
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "os-release"), []byte("ID=debian\nVERSION_CODENAME=bookworm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := testimage.Bookworm()
	spec.RootDir = root
	img := testimage.For(t, spec)
	im, err := diskimg.Open(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	// Not go-diskfs's "could not read directory entries for var/lib".
	want := "dpkg database: the root file system has no /var/lib/dpkg/status, which every Raspberry Pi OS image has"
	if _, err := Read(im); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Read of an image without a dpkg database = %v; want an error saying which file is missing: %q", err, want)
	}
}
