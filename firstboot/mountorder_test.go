package firstboot

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// credentialArg is one systemd.set_credential_binary= argument as PID 1
// reads it from the kernel command line (systemd src/core/import-creds.c,
// proc_cmdline_callback): the credential's name up to the first colon,
// then its value in base64.
type credentialArg struct {
	name  string
	value []byte
}

func parseCredentialArg(t *testing.T, arg string) credentialArg {
	t.Helper()
	rest, ok := strings.CutPrefix(arg, "systemd.set_credential_binary=")
	if !ok {
		t.Fatalf("%q is not a systemd.set_credential_binary= argument", arg)
	}
	name, enc, ok := strings.Cut(rest, ":")
	if !ok {
		t.Fatalf("%q has no name:value", arg)
	}
	value, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		t.Fatalf("%q: the value is not base64: %v", arg, err)
	}
	// credential_name_valid: a valid file name and a valid fd name
	// (printable ASCII without ':', at most 255 bytes).
	if name == "" || len(name) > 255 || strings.ContainsAny(name, "/:") || !regexp.MustCompile(`^[\x21-\x7e]+$`).MatchString(name) {
		t.Errorf("credential name %q is not one systemd accepts", name)
	}
	return credentialArg{name: name, value: value}
}

// TestMountOrderCredentials: a cloud-init node's cmdline carries, for
// each unit that runs cloud-init's local stage, a drop-in credential that
// systemd-debug-generator turns into UNIT.d/NAME.conf
// (src/debug-generator/debug-generator.c: "systemd.unit-dropin." UNIT,
// then "~" NAME), holding RequiresMountsFor=/boot/firmware; the
// activator removes exactly those; a systemd-run node carries none.
func TestMountOrderCredentials(t *testing.T) {
	p := renderFor(t, singleRecipe, "wifi", Options{BuildID: "b1", Base: Base{CloudInit: true, SystemdFirstBoot: true}})
	var units []string
	for _, arg := range p.CmdlineAdd {
		if !strings.HasPrefix(arg, "systemd.") {
			continue
		}
		c := parseCredentialArg(t, arg)
		spec, ok := strings.CutPrefix(c.name, "systemd.unit-dropin.")
		if !ok {
			t.Errorf("credential %q is not a unit drop-in", c.name)
			continue
		}
		unit, dropin, ok := strings.Cut(spec, "~")
		if !ok || dropin == "" || !regexp.MustCompile(`^[a-zA-Z0-9:_.\\-]+\.service$`).MatchString(unit) {
			t.Errorf("credential %q: unit %q, drop-in %q", c.name, unit, dropin)
		}
		units = append(units, unit)
		if got := string(c.value); got != "[Unit]\nRequiresMountsFor=/boot/firmware\n" {
			t.Errorf("drop-in for %s = %q", unit, got)
		}
		verifyDropin(t, unit, dropin, c.value)
	}
	if want := []string{"cloud-init-local.service", "cloud-init-main.service"}; !slices.Equal(units, want) {
		t.Errorf("drop-ins for %v; want %v", units, want)
	}
	env := string(fileData(t, p, "pibake/node.env"))
	for _, arg := range p.CmdlineAdd {
		if strings.HasPrefix(arg, "systemd.") != strings.Contains(env, arg) {
			t.Errorf("PIBAKE_CMDLINE_REMOVE and the argument %q disagree:\n%s", arg, env)
		}
	}
	if !slices.ContainsFunc(p.CmdlineAdd, func(a string) bool { return strings.HasPrefix(a, "ds=nocloud;i=pibake-") }) {
		t.Errorf("no ds=nocloud;i= in %q", p.CmdlineAdd)
	}

	bw := renderFor(t, singleRecipe, "wifi", Options{BuildID: "b1", Base: Base{}})
	if slices.ContainsFunc(bw.CmdlineAdd, func(a string) bool { return strings.HasPrefix(a, "systemd.set_credential") }) {
		t.Errorf("a systemd-run node carries credentials: %q", bw.CmdlineAdd)
	}
}

// verifyDropin checks the drop-in with the host's systemd-analyze, as the
// generator would install it beside a unit of that name.
func verifyDropin(t *testing.T, unit, name string, data []byte) {
	t.Helper()
	analyze := requireTool(t, "systemd-analyze")
	dir := t.TempDir()
	unitFile := filepath.Join(dir, unit)
	os.WriteFile(unitFile, []byte("[Unit]\nDescription=stand-in\n[Service]\nType=oneshot\nExecStart=/bin/true\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, unit+".d"), 0o755)
	check := func(content []byte) string {
		os.WriteFile(filepath.Join(dir, unit+".d", name+".conf"), content, 0o644)
		cmd := exec.Command(analyze, "verify", "--man=no", unitFile)
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, _ := cmd.CombinedOutput()
		var ours []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, name) {
				ours = append(ours, line)
			}
		}
		return strings.Join(ours, "\n")
	}
	if problems := check(data); problems != "" {
		t.Errorf("systemd-analyze verify of the %s drop-in:\n%s", unit, problems)
	}
	if problems := check([]byte("[Unit]\nRequiresMountFor=/boot/firmware\n")); !strings.Contains(problems, "RequiresMountFor") {
		t.Errorf("systemd-analyze verify did not see a misspelt key in a drop-in; the check cannot see mistakes here: %q", problems)
	}
}

func fileData(t *testing.T, p Payload, name string) []byte {
	t.Helper()
	for _, f := range p.Files {
		if f.Path == name {
			return f.Data
		}
	}
	t.Fatalf("payload has no %s", name)
	return nil
}

// TestCloudInitActivationRemovesOnlyItsArguments: run by cloud-init, the
// activator takes the mount-order credentials off cmdline.txt and keeps
// everything else, ds=nocloud;i= included (cloud-init reads it at every
// boot; it pins the instance).
func TestCloudInitActivationRemovesOnlyItsArguments(t *testing.T) {
	p := renderFor(t, singleRecipe, "wifi", Options{BuildID: "b1", Base: Base{CloudInit: true, SystemdFirstBoot: true}})
	n := newFakeNode(t, p)
	n.activate(t, "PIBAKE_METHOD=cloud-init")
	var kept []string
	for _, a := range p.CmdlineAdd {
		if !strings.HasPrefix(a, "systemd.") {
			kept = append(kept, a)
		}
	}
	want := originalCmdline + " " + strings.Join(kept, " ") + "\n"
	if got := n.read(t, "boot/firmware/cmdline.txt"); got != want {
		t.Errorf("cmdline.txt = %q; want %q", got, want)
	}
	if !strings.Contains(want, "ds=nocloud;i=") || strings.Contains(want, "set_credential") {
		t.Fatalf("the expectation is wrong: %q", want)
	}
}
