package diskimg

import (
	"bufio"
	"fmt"
	"strings"
)

// Release styles, told apart by the shipped cmdline.txt.
const (
	// StyleBookworm boots first with init=/usr/lib/raspberrypi-sys-mods/firstboot.
	StyleBookworm = "bookworm"
	// StyleTrixie grows the root in the initramfs when "resize" is present.
	StyleTrixie = "trixie"
	// StyleBooted has neither: an image that has booted already, or an
	// unknown release.
	StyleBooted = "booted-or-unknown"
)

// Release is what pibake learns about a base image from the image itself.
type Release struct {
	Style string `json:"style"`
	// CloudInit is true when the root file system ships cloud-init.
	CloudInit bool `json:"cloud_init"`
	// Activation is the first-boot method "auto" resolves to.
	Activation string `json:"activation"`
	PrettyName string `json:"os_release"`
	Codename   string `json:"codename"`
	Hostname   string `json:"hostname"`
	Cmdline    string `json:"cmdline"`
	// Boot partition geometry.
	BootStartSector  int64 `json:"boot_start_sector"`
	BootClusterBytes int64 `json:"boot_cluster_bytes"`
}

// DetectRelease reads the cmdline, /etc/os-release, /etc/hostname and the
// presence of cloud-init.
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
	if h, err := im.ReadRootFile("etc/hostname"); err == nil {
		r.Hostname = strings.TrimSpace(string(h))
	}
	for _, p := range []string{"usr/bin/cloud-init", "etc/cloud/cloud.cfg"} {
		ok, err := im.RootFileExists(p)
		if err != nil {
			return Release{}, fmt.Errorf("look for cloud-init: %w", err)
		}
		r.CloudInit = r.CloudInit || ok
	}
	r.Activation = "systemd-run"
	if r.CloudInit {
		r.Activation = "cloud-init"
	}
	return r, nil
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
