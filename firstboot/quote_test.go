package firstboot

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pibake/pibake/internal/testimage"
	"go.yaml.in/yaml/v3"
)

// The quoting functions guard shell and YAML that run as root on every
// node: a value must come out of the real parser exactly as it went in,
// whatever it holds. Recipes refuse control characters where a value
// reaches a shell (k3s_args); the rest is checked here.

var hostile = []string{
	"", "plain", "two words", "'single'", `"double"`, `back\slash`, "$(touch /tmp/pwned)", "`id`",
	"${PATH}", "$HOME", "semi;colon", "a|b&c>d<e", "new\nline", "tab\there", "carriage\rreturn",
	" leading", "trailing ", "-dash-first", "--flag=value with spaces", "ünïcødé ✓ 🥧", "*", "~root",
	"# not a comment", "key: value", "- list item", "{flow: map}", "[flow, seq]", "&anchor", "!tag", "null", "true", "0x10", "1e3",
	"'; rm -rf / #", "\\n", "a\\'b", "%s%n",
}

// shellRoundTrip prints s through sh as node.env would hand it over.
func shellRoundTrip(t *testing.T, sh, s string) string {
	t.Helper()
	out, err := exec.Command(sh, "-c", "v="+shellQuote(s)+"\nprintf '%s' \"$v\"").Output()
	if err != nil {
		t.Fatalf("sh -c v=%s: %v", shellQuote(s), err)
	}
	return string(out)
}

func TestShellQuote(t *testing.T) {
	sh := requireTool(t, "sh")
	for _, s := range hostile {
		if got := shellRoundTrip(t, sh, s); got != s {
			t.Errorf("shellQuote(%q) = %s, which sh reads as %q", s, shellQuote(s), got)
		}
	}
	// shellJoin keeps word boundaries through eval "set -- ...", as
	// firstboot.sh passes k3s_args to the install script.
	out, err := exec.Command(sh, "-c", `eval "set -- $1"; printf '%s\n' "$#"; for w; do printf '[%s]' "$w"; done`, "sh", shellJoin(hostile)).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d\n[%s]", len(hostile), strings.Join(hostile, "]["))
	if string(out) != want {
		t.Errorf("shellJoin through eval gave %q; want %q", out, want)
	}
}

func FuzzShellQuote(f *testing.F) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range hostile {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsRune(s, 0) {
			return // a shell variable cannot hold NUL; recipes refuse it
		}
		if got := shellRoundTrip(t, sh, s); got != s {
			t.Errorf("shellQuote(%q) = %s, which sh reads as %q", s, shellQuote(s), got)
		}
	})
}

// yamlRoundTrip parses yamlQuote(s) as a map value and a list item with
// go-yaml, the YAML library k3s's configuration reading is built on.
func yamlRoundTrip(t *testing.T, s string) string {
	t.Helper()
	doc := "key: " + yamlQuote(s) + "\nlist:\n  - " + yamlQuote(s) + "\n"
	var v struct {
		Key  string
		List []string
	}
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("yaml %q: %v", doc, err)
	}
	if len(v.List) != 1 || v.List[0] != v.Key {
		t.Fatalf("yaml %q: the list item reads %q, the map value %q", doc, v.List, v.Key)
	}
	return v.Key
}

func TestYAMLQuote(t *testing.T) {
	values := append(hostile, "nul\x00byte", "\x01\x1f control", "del\x7f", "c1\u0085\u009f", "sep\u2028\u2029", "bom\ufeff")
	for _, s := range values {
		if got := yamlRoundTrip(t, s); got != s {
			t.Errorf("yamlQuote(%q) = %s, which YAML reads as %q", s, yamlQuote(s), got)
		}
	}
	// cloud-init reads user-data and network-config with PyYAML.
	python := pythonWith(t, "yaml", "python3-yaml")
	var doc strings.Builder
	for _, s := range values {
		doc.WriteString("- " + yamlQuote(s) + "\n")
	}
	cmd := exec.Command(python, "-c", "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin.read()), sys.stdout)")
	cmd.Stdin = strings.NewReader(doc.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("PyYAML: %v\n%s", err, out)
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil || len(got) != len(values) {
		t.Fatalf("PyYAML read %s (%v)", out, err)
	}
	for i, s := range values {
		if got[i] != s {
			t.Errorf("yamlQuote(%q) = %s, which PyYAML reads as %q", s, yamlQuote(s), got[i])
		}
	}
}

func FuzzYAMLQuote(f *testing.F) {
	for _, s := range hostile {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return // HCL strings, where every value comes from, are UTF-8
		}
		if got := yamlRoundTrip(t, s); got != s {
			t.Errorf("yamlQuote(%q) = %s, which YAML reads as %q", s, yamlQuote(s), got)
		}
	})
}

// TestKeyfileEscape reads keyfileEscape's output with GLib's GKeyFile,
// which NetworkManager reads its keyfiles with.
func TestKeyfileEscape(t *testing.T) {
	python := pythonWith(t, "gi.repository.GLib", "python3-gi gir1.2-glib-2.0")
	var file strings.Builder
	file.WriteString("[wifi]\n")
	var values []string
	for _, s := range hostile {
		if strings.ContainsAny(s, "\x00") || !utf8.ValidString(s) {
			continue
		}
		file.WriteString("k" + string(rune('a'+len(values)%26)) + strings.Repeat("x", len(values)/26) + "=" + keyfileEscape(s) + "\n")
		values = append(values, s)
	}
	script := `
import sys
from gi.repository import GLib
data = sys.stdin.read()
k = GLib.KeyFile()
k.load_from_data(data, len(data.encode()), GLib.KeyFileFlags.NONE)
keys, _ = k.get_keys("wifi")
for key in keys:
    sys.stdout.write(k.get_string("wifi", key) + "\0")
`
	cmd := exec.Command(python, "-c", script)
	cmd.Stdin = strings.NewReader(file.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("GLib keyfile: %v\n%s", err, out)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(got) != len(values) {
		t.Fatalf("GLib read %d values; want %d:\n%s", len(got), len(values), file.String())
	}
	for i, s := range values {
		if got[i] != s {
			t.Errorf("keyfileEscape(%q) = %q, which GKeyFile reads as %q", s, keyfileEscape(s), got[i])
		}
	}
}

// pythonWith is a python3 that can import module (Debian packages pkgs).
func pythonWith(t *testing.T, module, pkgs string) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import "+module).Run() == nil {
			return p
		}
	}
	testimage.Missing(t, fmt.Sprintf("python3 with %s (apt-get install %s, or make deps)", module, pkgs))
	return ""
}
