package diskimg

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Style is how a release's first boot works, told apart by the shipped
// cmdline.txt.
type Style string

// The release styles.
const (
	// StyleBookworm boots first with init=/usr/lib/raspberrypi-sys-mods/firstboot.
	StyleBookworm Style = "bookworm"
	// StyleTrixie grows the root in the initramfs when "resize" is present.
	StyleTrixie Style = "trixie"
	// StyleBooted has neither: an image that has booted already, or an
	// unknown release.
	StyleBooted Style = "booted-or-unknown"
)

// States of /etc/machine-id on the root file system.
const (
	// MachineIDUninitialized: systemd's first boot is still to come
	// (Trixie images; ConditionFirstBoot units such as rpi-resize run then).
	MachineIDUninitialized = "uninitialized"
	// MachineIDEmpty: the file is empty (Bookworm images).
	MachineIDEmpty = "empty"
	// MachineIDSet: the image has booted and committed an ID.
	MachineIDSet = "set"
	// MachineIDMissing: there is no /etc/machine-id.
	MachineIDMissing = "missing"
)

// Release is what pibake learns about a base image from the image itself.
type Release struct {
	Style Style `json:"style"`
	// CloudInit is true when the root file system ships cloud-init.
	CloudInit bool `json:"cloud_init"`
	// MachineID is the state of /etc/machine-id (MachineIDUninitialized, …).
	MachineID  string `json:"machine_id"`
	PrettyName string `json:"os_release"`
	Codename   string `json:"codename"`
	// OSID and OSVersionID are os-release's ID ("debian"; "raspbian" for
	// the 32-bit OS) and VERSION_ID ("12"): an SBOM's package URLs name
	// the distribution with them, as syft does.
	OSID        string `json:"os_id,omitempty"`
	OSVersionID string `json:"os_version_id,omitempty"`
	Hostname    string `json:"hostname"`
	Cmdline     string `json:"cmdline"`
	// Customised lists what on the boot partition shows that something
	// already set this image up for a machine: an earlier pibake payload,
	// a Raspberry Pi Imager customisation. Empty on an official image.
	Customised []string `json:"customised,omitempty"`
	// Boot partition geometry.
	BootStartSector  int64 `json:"boot_start_sector"`
	BootClusterBytes int64 `json:"boot_cluster_bytes"`
}

// SystemdFirstBoot reports whether systemd's first boot is still to come
// on the image (/etc/machine-id says "uninitialized"): what decides, with
// CloudInit, how a payload is activated on it.
func (r Release) SystemdFirstBoot() bool { return r.MachineID == MachineIDUninitialized }

// DetectRelease reads the cmdline, /etc/os-release, /etc/hostname,
// /etc/machine-id, the presence of cloud-init and any customisation of the
// boot partition.
func (im *Image) DetectRelease() (Release, error) {
	cmdline, err := im.ReadBootFile("cmdline.txt")
	if err != nil {
		return Release{}, err
	}
	r := Release{
		Cmdline:          strings.TrimSpace(string(cmdline)),
		BootStartSector:  im.BootPartition().StartSector,
		BootClusterBytes: im.ClusterBytes(),
		Style:            StyleBooted,
	}
	for _, arg := range strings.Fields(r.Cmdline) {
		switch {
		case arg == "init=/usr/lib/raspberrypi-sys-mods/firstboot":
			r.Style = StyleBookworm
		case arg == "resize":
			r.Style = StyleTrixie
		}
	}
	osRelease, err := im.ReadRootFile("etc/os-release")
	if err != nil {
		return Release{}, err
	}
	kv := parseOSRelease(string(osRelease))
	r.PrettyName, r.Codename = kv["PRETTY_NAME"], kv["VERSION_CODENAME"]
	r.OSID, r.OSVersionID = kv["ID"], kv["VERSION_ID"]
	if h, err := im.ReadRootFile("etc/hostname"); err == nil {
		r.Hostname = strings.TrimSpace(string(h))
	}
	if r.MachineID, err = im.machineID(); err != nil {
		return Release{}, err
	}
	for _, p := range []string{"usr/bin/cloud-init", "etc/cloud/cloud.cfg"} {
		ok, err := im.RootFileExists(p)
		if err != nil {
			return Release{}, fmt.Errorf("look for cloud-init: %w", err)
		}
		r.CloudInit = r.CloudInit || ok
	}
	if r.Customised, err = im.customisation(r.Cmdline); err != nil {
		return Release{}, err
	}
	return r, nil
}

// Bootable reports why cmdline.txt cannot boot Raspberry Pi OS, or nil.
func (r Release) Bootable() error {
	for _, arg := range strings.Fields(r.Cmdline) {
		if strings.HasPrefix(arg, "root=") {
			return nil
		}
	}
	if r.Cmdline == "" {
		return errors.New("cmdline.txt on the boot partition is empty: the kernel would not find the root file system")
	}
	return fmt.Errorf("cmdline.txt on the boot partition has no root= argument (%q): the kernel would not find the root file system", r.Cmdline)
}

func (im *Image) machineID() (string, error) {
	ok, err := im.RootFileExists("etc/machine-id")
	if err != nil {
		return "", fmt.Errorf("look for /etc/machine-id: %w", err)
	}
	if !ok {
		return MachineIDMissing, nil
	}
	b, err := im.ReadRootFile("etc/machine-id")
	if err != nil {
		return "", err
	}
	switch strings.TrimSpace(string(b)) {
	case "":
		return MachineIDEmpty, nil
	case "uninitialized":
		return MachineIDUninitialized, nil
	}
	return MachineIDSet, nil
}

// customisation lists the signs that the boot partition was already set up
// for a machine. An official image has none; building from one that has
// would copy the earlier machine's settings (Wi-Fi key, SSH keys, static
// address, user) into every node.
func (im *Image) customisation(cmdline string) ([]string, error) {
	var found []string
	for _, arg := range strings.Fields(cmdline) {
		switch {
		case strings.HasPrefix(arg, "systemd.run="):
			found = append(found, fmt.Sprintf("cmdline.txt runs %s (a Raspberry Pi Imager or pibake first-boot script)", arg))
		case strings.HasPrefix(arg, "ds=nocloud"):
			found = append(found, fmt.Sprintf("cmdline.txt has %s (a Raspberry Pi Imager cloud-init customisation)", arg))
		}
	}
	if b, err := im.ReadBootFile(path.Join("pibake", "node.json")); err == nil {
		var p struct {
			Hostname string `json:"hostname"`
			BuildID  string `json:"build_id"`
		}
		json.Unmarshal(b, &p)
		found = append(found, fmt.Sprintf("it holds a pibake payload for node %q (build %s)", p.Hostname, p.BuildID))
	} else if !errors.Is(err, ErrNotExist) {
		return nil, err
	}
	for _, f := range []struct{ name, what string }{
		{name: "firstrun.sh", what: "Raspberry Pi Imager's first-boot script"},
		{name: "userconf.txt", what: "a login user for userconf-pi"},
		{name: "userconf", what: "a login user for userconf-pi"},
		{name: "failed_userconf.txt", what: "a login user userconf-pi refused"},
		{name: "custom.toml", what: "Raspberry Pi OS first-boot settings"},
		{name: "rpi-preseed.toml", what: "Raspberry Pi Imager's preseed settings"},
	} {
		if _, err := im.ReadBootFile(f.name); err == nil {
			found = append(found, fmt.Sprintf("%s is present (%s)", f.name, f.what))
		} else if !errors.Is(err, ErrNotExist) {
			return nil, err
		}
	}
	// Trixie ships cloud-init seed templates that are comments only, apart
	// from meta-data's "dsmode: local" and "instance_id: rpios-image".
	for _, name := range []string{"user-data", "network-config", "meta-data"} {
		b, err := im.ReadBootFile(name)
		if errors.Is(err, ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if key := activeSeedKey(name, b); key != "" {
			found = append(found, fmt.Sprintf("%s is not the shipped template (it sets %s)", name, key))
		}
	}
	sort.Strings(found)
	return found, nil
}

// activeSeedKey returns the key of the first line of a cloud-init seed file
// that sets something the shipped template does not. Only the key: the
// value may be a secret.
func activeSeedKey(name string, b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if name == "meta-data" && (strings.HasPrefix(line, "dsmode:") || line == "instance_id: rpios-image") {
			continue
		}
		key, _, _ := strings.Cut(line, ":")
		if len(key) > 40 {
			key = key[:40] + "…"
		}
		return strconv.Quote(key)
	}
	return ""
}

func parseOSRelease(s string) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		kv[k] = strings.Trim(v, `"'`)
	}
	return kv
}
