// Package firstboot renders what a node needs at first boot: the files for
// its boot partition (activator, systemd unit, first-boot script, k3s
// configuration, network keyfiles, cloud-init seed) and the cmdline.txt
// arguments to add. It is pure: no disk access, the same inputs always give
// the same bytes.
//
// This package is internal to pibake and not a stable API.
package firstboot

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"text/template"

	"github.com/pibake/pibake/recipes"
)

// The activation methods.
const (
	MethodSystemdRun = "systemd-run"
	MethodCloudInit  = "cloud-init"
)

// Dir is the folder on the boot partition that holds pibake's payload; the
// running system mounts the boot partition at /boot/firmware.
const Dir = "pibake"

// CgroupArgs enable the memory cgroup, without which k3s dies with "failed
// to find memory cgroup (v2)". They go at the end of the line: a later
// argument wins over a cgroup_disable=memory the firmware may add.
var CgroupArgs = []string{"cgroup_memory=1", "cgroup_enable=memory"}

// SystemdRunArgs activate the payload on the next systemd boot, the way
// Raspberry Pi Imager runs its firstrun.sh. The activator removes them.
var SystemdRunArgs = []string{
	"systemd.run=/boot/firmware/" + Dir + "/activate.sh",
	"systemd.run_success_action=reboot",
	"systemd.unit=kernel-command-line.target",
}

// File is one file for the boot partition.
type File struct {
	// Path is relative to the boot partition's root, with forward slashes.
	Path string
	// Mode is what the file gets once installed in the root file system
	// (FAT has no modes); 0600 marks a file that holds a secret.
	Mode fs.FileMode
	Data []byte
	// Source, when set, names a local file whose content the builder copies
	// instead of Data (air-gap binaries are too large to hold in memory).
	Source string
}

// Payload is everything one node's image needs written.
type Payload struct {
	Method string
	// Files sorted by Path.
	Files []File
	// CmdlineAdd are arguments to append to cmdline.txt when not present.
	CmdlineAdd []string
}

// Options are the inputs that do not come from the recipe.
type Options struct {
	// Token is the cluster token to use when the recipe gives none (the
	// builder generates and keeps it). Ignored when the recipe has one.
	Token string
	// BuildID identifies the build; it names the cloud-init instance, so a
	// re-flashed node runs cloud-init again.
	BuildID string
	// ImageHasCloudInit is what the builder detected in the base image; it
	// decides the method "auto".
	ImageHasCloudInit bool
}

//go:embed templates
var templateFS embed.FS

var templates = template.Must(template.New("").Option("missingkey=error").ParseFS(templateFS, "templates/*"))

// Render builds the payload of node n of cluster c.
func Render(c *recipes.Cluster, n *recipes.Node, opt Options) (Payload, error) {
	token := c.Token.Reveal()
	if token == "" {
		token = opt.Token
	}
	if token == "" {
		return Payload{}, errors.New("no cluster token: the recipe gives none and none was generated")
	}
	method, err := chooseMethod(n.Firstboot.Method, opt.ImageHasCloudInit)
	if err != nil {
		return Payload{}, err
	}
	p := Payload{Method: method, CmdlineAdd: append([]string(nil), CgroupArgs...)}
	if n.WiFi != nil {
		p.CmdlineAdd = append(p.CmdlineAdd, "cfg80211.ieee80211_regdom="+n.WiFi.Country)
	}
	var remove []string
	if method == MethodSystemdRun {
		p.CmdlineAdd = append(p.CmdlineAdd, SystemdRunArgs...)
		remove = SystemdRunArgs
	}

	data := templateData{Hostname: n.Hostname, Role: string(n.Role), Method: method}
	add := func(name string, mode fs.FileMode, b []byte) {
		p.Files = append(p.Files, File{Path: name, Mode: mode, Data: b})
	}
	for _, t := range []struct {
		tmpl, name string
		mode       fs.FileMode
	}{
		{tmpl: "activate.sh", name: "activate.sh", mode: 0o755},
		{tmpl: "firstboot.sh", name: "firstboot.sh", mode: 0o755},
		{tmpl: "pibake-firstboot.service", name: "pibake-firstboot.service", mode: 0o644},
	} {
		b, err := execute(t.tmpl, data)
		if err != nil {
			return Payload{}, err
		}
		add(path.Join(Dir, t.name), t.mode, b)
	}
	add(path.Join(Dir, "node.env"), 0o644, NodeEnv(c, n, opt.BuildID, remove))
	add(path.Join(Dir, "k3s-config.yaml"), 0o600, K3sConfig(c, n, token))
	add(path.Join(Dir, "node.json"), 0o644, nodeSummary(c, n, opt.BuildID, method))

	if u := n.User; u != nil {
		hash := u.PasswordHash.Reveal()
		if hash == "" {
			hash = "*" // no password login; SSH keys only
		}
		add("userconf.txt", 0o600, []byte(u.Name+":"+hash+"\n"))
		if len(u.SSHAuthorizedKeys) > 0 {
			add(path.Join(Dir, "authorized_keys"), 0o600, []byte(strings.Join(u.SSHAuthorizedKeys, "\n")+"\n"))
		}
	}
	if n.SSH {
		add("ssh", 0o644, nil)
	}
	if method == MethodCloudInit {
		add("meta-data", 0o644, metaData(c, n, opt.BuildID))
		add("user-data", 0o644, userData(n))
		if nc := NetworkConfig(n); nc != nil {
			add("network-config", 0o600, nc)
		}
	} else {
		for _, k := range Keyfiles(n) {
			add(path.Join(Dir, k.Path), 0o600, k.Data)
		}
	}
	if a := c.Airgap; a != nil {
		p.Files = append(p.Files, airgapFiles(a)...)
	}
	sort.Slice(p.Files, func(i, j int) bool { return p.Files[i].Path < p.Files[j].Path })
	return p, nil
}

func chooseMethod(method string, hasCloudInit bool) (string, error) {
	switch method {
	case "", "auto":
		// Prefer cloud-init where the image ships it: on Trixie a
		// systemd.run boot may be the one that commits /etc/machine-id, and
		// then ConditionFirstBoot units such as rpi-resize never run.
		if hasCloudInit {
			return MethodCloudInit, nil
		}
		return MethodSystemdRun, nil
	case MethodSystemdRun:
		return method, nil
	case MethodCloudInit:
		if !hasCloudInit {
			return "", errors.New(`first-boot method "cloud-init" asked for, but the base image has no cloud-init; use "auto" or "systemd-run"`)
		}
		return method, nil
	}
	return "", fmt.Errorf("unknown first-boot method %q", method)
}

type templateData struct {
	Hostname string
	Role     string
	Method   string
}

func execute(name string, data templateData) ([]byte, error) {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// NodeEnv renders node.env: the node's settings as shell assignments, read
// by the activator and the first-boot script. It holds no secret.
func NodeEnv(c *recipes.Cluster, n *recipes.Node, buildID string, cmdlineRemove []string) []byte {
	user := ""
	if n.User != nil && len(n.User.SSHAuthorizedKeys) > 0 {
		user = n.User.Name
	}
	airgap := "0"
	if c.Airgap != nil && c.Airgap.InstallScript != "" {
		airgap = "1"
	}
	vars := []struct{ name, value string }{
		{name: "PIBAKE_HOSTNAME", value: n.Hostname},
		{name: "PIBAKE_ROLE", value: string(n.Role)},
		{name: "PIBAKE_BUILD_ID", value: buildID},
		{name: "PIBAKE_JOIN_URL", value: n.JoinURL},
		{name: "PIBAKE_JOIN_BATCH", value: fmt.Sprint(n.JoinBatch)},
		{name: "PIBAKE_K3S_VERSION", value: c.K3sVersion},
		{name: "PIBAKE_K3S_CHANNEL", value: c.K3sChannel},
		{name: "PIBAKE_INSTALL_SCRIPT_URL", value: c.InstallScriptURL},
		{name: "PIBAKE_AIRGAP", value: airgap},
		{name: "PIBAKE_K3S_ARGS", value: ShellJoin(n.K3sArgs)},
		{name: "PIBAKE_APT_UPGRADE", value: boolFlag(n.Apt.Upgrade)},
		{name: "PIBAKE_MODULES_EXTRA", value: boolFlag(n.Apt.ModulesExtra)},
		{name: "PIBAKE_APT_PACKAGES", value: strings.Join(n.Apt.Packages, " ")},
		{name: "PIBAKE_USER", value: user},
		{name: "PIBAKE_TIMEZONE", value: n.Timezone},
		{name: "PIBAKE_CMDLINE_REMOVE", value: strings.Join(cmdlineRemove, " ")},
	}
	var b strings.Builder
	b.WriteString("# Written by pibake: this node's first-boot settings. No secrets here.\n")
	b.WriteString("# shellcheck disable=SC2034 # read by the scripts that source this file\n")
	for _, v := range vars {
		fmt.Fprintf(&b, "%s=%s\n", v.name, ShellQuote(v.value))
	}
	return []byte(b.String())
}

func boolFlag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// ShellQuote quotes s for POSIX sh so that it is one word with exactly
// this value, whatever it contains.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=+,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ShellJoin quotes each word and joins them, for `eval "set -- $x"`.
func ShellJoin(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = ShellQuote(w)
	}
	return strings.Join(q, " ")
}

// instanceID names the cloud-init instance: stable for one build of one
// node, different for the next build, so a re-flashed node runs again.
func instanceID(c *recipes.Cluster, n *recipes.Node, buildID string) string {
	sum := sha256.Sum256([]byte(c.Name + "\x00" + n.Hostname + "\x00" + buildID))
	return "pibake-" + hex.EncodeToString(sum[:8])
}

// airgapFiles are the k3s files copied from the build machine. The
// activator installs images by their k3s-airgap-images- prefix.
func airgapFiles(a *recipes.Airgap) []File {
	var files []File
	if a.K3sBinary != "" {
		files = append(files, File{Path: path.Join(Dir, "airgap", "k3s"), Mode: 0o755, Source: a.K3sBinary})
	}
	if a.Images != "" {
		name := path.Base(strings.ReplaceAll(a.Images, `\`, "/"))
		if !strings.HasPrefix(name, "k3s-airgap-images-") {
			name = "k3s-airgap-images-" + name
		}
		files = append(files, File{Path: path.Join(Dir, "airgap", name), Mode: 0o644, Source: a.Images})
	}
	if a.InstallScript != "" {
		files = append(files, File{Path: path.Join(Dir, "airgap", "install.sh"), Mode: 0o755, Source: a.InstallScript})
	}
	return files
}
