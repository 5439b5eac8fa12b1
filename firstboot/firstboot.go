// Package firstboot renders what a node needs at first boot: the files for
// its boot partition (activator, systemd unit, first-boot script, k3s
// configuration, network keyfiles, cloud-init seed) and the cmdline.txt
// arguments to add. It is pure: no disk access, the same inputs always give
// the same bytes.
//
// This package is internal to pibake and not a stable API.
package firstboot

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/pibake/pibake/recipes"
)

// Dir is the folder on the boot partition that holds pibake's payload; the
// running system mounts the boot partition at /boot/firmware.
const Dir = "pibake"

// cgroupArgs enable the memory cgroup, without which k3s dies with "failed
// to find memory cgroup (v2)". They go at the end of the line: a later
// argument wins over a cgroup_disable=memory the firmware may add.
func cgroupArgs() []string { return []string{"cgroup_memory=1", "cgroup_enable=memory"} }

// systemdRunArgs activate the payload on the next systemd boot, the way
// Raspberry Pi Imager runs its firstrun.sh, in a boot that runs nothing
// else (kernel-command-line.target). The activator removes them. Its
// success reboots; its failure action is none rather than systemd's
// default (exit, which powers the Pi off): the activator itself never
// fails, it records failures and retries a bounded number of boots.
func systemdRunArgs() []string {
	return []string{
		"systemd.run=/boot/firmware/" + Dir + "/activate.sh",
		"systemd.run_success_action=reboot",
		"systemd.run_failure_action=none",
		"systemd.unit=kernel-command-line.target",
	}
}

// mountOrderUnits are the units that run cloud-init's local stage, which
// decides the datasource: cloud-init-local.service, and since cloud-init
// 24.3 cloud-init-main.service, the one process that runs every stage
// (the others only signal it). Both are DefaultDependencies=no and ordered
// only after /var/lib/cloud's mount, not /boot/firmware's, where Raspberry
// Pi OS points NoCloud (seedfrom file:///boot/firmware).
var mountOrderUnits = []string{"cloud-init-local.service", "cloud-init-main.service"}

// mountOrderDropin orders a unit after the boot partition's mount and makes
// it need that mount: what sdm adds to cloud-init for the same race
// (gitbls/sdm 7c91c63).
const mountOrderDropin = "[Unit]\nRequiresMountsFor=/boot/firmware\n"

// mountOrderArgs make cloud-init wait for the boot partition on the boots
// before activation, without writing the root file system. On fast storage
// (a Pi 5 booting from NVMe: canonical/cloud-init#6614; an SSD:
// RPi-Distro/pi-gen#892) cloud-init's local stage can run before
// /boot/firmware is mounted, find no seed, fall back to DataSourceNone, and
// the node is never activated. Each argument is a system credential on the
// kernel command line (systemd.set_credential_binary=, read by PID 1)
// that systemd-debug-generator (systemd 256 and later; Trixie ships 257)
// turns into a drop-in in /run/systemd/generator.early: see
// src/debug-generator/debug-generator.c, process_unit_credentials, where
// "systemd.unit-dropin.UNIT~NAME" becomes UNIT.d/NAME.conf. Older systemd
// ignores it. The activator removes them with its other arguments.
func mountOrderArgs() []string {
	enc := base64.StdEncoding.EncodeToString([]byte(mountOrderDropin))
	args := make([]string, len(mountOrderUnits))
	for i, unit := range mountOrderUnits {
		args[i] = "systemd.set_credential_binary=systemd.unit-dropin." + unit + "~pibake-bootfs:" + enc
	}
	return args
}

// ActivationArgs are the arguments of cmdline that pibake's activation
// adds and its activator removes once the node is set up (the
// systemd.run= trampoline, the mount-order credentials): on a card that
// has booted, still finding one means the activation never finished.
func ActivationArgs(cmdline string) []string {
	ours := map[string]bool{}
	for _, a := range append(systemdRunArgs(), mountOrderArgs()...) {
		ours[a] = true
	}
	var found []string
	for _, a := range strings.Fields(cmdline) {
		if ours[a] {
			found = append(found, a)
		}
	}
	return found
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
	Method recipes.Method
	// Files sorted by Path.
	Files []File
	// CmdlineAdd are arguments to append to cmdline.txt when not present.
	CmdlineAdd []string
	// ConfigTxt, when not nil, is what pibake's block in config.txt holds
	// (ConfigTxt renders it; the builder edits config.txt with it).
	ConfigTxt []string
}

// Base is what the builder learned about the base image that decides how a
// payload can be activated.
type Base struct {
	// CloudInit is true when the root file system ships cloud-init.
	CloudInit bool
	// SystemdFirstBoot is true when /etc/machine-id says "uninitialized":
	// the OS's systemd first boot, which runs ConditionFirstBoot units such
	// as rpi-resize (Trixie grows its root file system there), is still to
	// come.
	SystemdFirstBoot bool
}

// Options are the inputs that do not come from the recipe.
type Options struct {
	// Token is the cluster token to use when the recipe gives none (the
	// builder generates and keeps it). Ignored when the recipe has one.
	Token string
	// BuildID identifies the build; it names the cloud-init instance, so a
	// re-flashed node runs cloud-init again.
	BuildID string
	// Base decides the method "auto" and refuses unsafe ones.
	Base Base
	// JoinToken, when set, is the full token (K10<CA hash>::user:secret)
	// this node joins with instead of the plain one: it pins the cluster
	// CA. Unused on the founding server, which never joins.
	JoinToken string
	// CAHash is the cluster CA hash the node pins or carries, for
	// node.json; empty without a generated CA.
	CAHash string
	// CAFiles, on the founding server only, are the cluster CA files k3s
	// reads from server/tls at first start, by their names there.
	CAFiles map[string][]byte
	// NodePassword, when set, becomes /etc/rancher/node/password.
	NodePassword string
	// ReportKey is the key the node signs its first-boot reports with
	// (report.NodeKey, hex), for a node with a report URL.
	ReportKey string
}

// ChooseMethod resolves a node's activation method for a base image: "auto"
// becomes cloud-init where the image ships it and systemd-run elsewhere,
// and a method that cannot work on the image is an error saying why.
func ChooseMethod(m recipes.Method, b Base) (recipes.Method, error) {
	// A systemd.run= boot on an image whose systemd first boot is still to
	// come is that first boot: systemd commits /etc/machine-id in it, and
	// ConditionFirstBoot units such as rpi-resize (which grows the root
	// file system) never run. Seen in a QEMU boot of a Trixie image.
	consumesFirstBoot := errors.New(`the base image's systemd first boot is still to come (/etc/machine-id is "uninitialized"), and a systemd.run activation boot would use it up: the root file system would never grow`)
	switch m {
	case recipes.MethodAuto, "":
		if b.CloudInit {
			return recipes.MethodCloudInit, nil
		}
		if b.SystemdFirstBoot {
			return "", fmt.Errorf("no safe first-boot method for this base image: it has no cloud-init, and %w; use an official Raspberry Pi OS Lite image", consumesFirstBoot)
		}
		return recipes.MethodSystemdRun, nil
	case recipes.MethodSystemdRun:
		if b.SystemdFirstBoot {
			method := ""
			if b.CloudInit {
				method = ` use method "auto" or "cloud-init", which this image ships.`
			}
			return "", fmt.Errorf(`first-boot method "systemd-run" does not suit this base image: %w.%s`, consumesFirstBoot, method)
		}
		return m, nil
	case recipes.MethodCloudInit:
		if !b.CloudInit {
			return "", errors.New(`first-boot method "cloud-init" asked for, but the base image has no cloud-init; use "auto" or "systemd-run"`)
		}
		return m, nil
	}
	return "", fmt.Errorf("unknown first-boot method %q", m)
}

//go:embed templates
var templateFS embed.FS

// script reads one of the payload's fixed files. They are the same for
// every node: everything node-specific is in node.env.
func script(name string) []byte {
	b, err := templateFS.ReadFile("templates/" + name)
	if err != nil {
		panic(err) // embedded at build time: a missing file is a programmer error
	}
	return b
}

// Render builds the payload of node n of cluster c.
func Render(c *recipes.Cluster, n *recipes.Node, opt Options) (Payload, error) {
	token := c.Token.Reveal()
	if token == "" {
		token = opt.Token
	}
	if token == "" {
		return Payload{}, errors.New("no cluster token: the recipe gives none and none was generated")
	}
	method, err := ChooseMethod(n.Firstboot.Method, opt.Base)
	if err != nil {
		return Payload{}, err
	}
	add, remove := cmdlineArgs(c, n, method, opt.BuildID)
	p := Payload{Method: method, CmdlineAdd: add, ConfigTxt: ConfigTxt(n)}
	caFiles := caFileNames(opt.CAFiles)
	if len(caFiles) > 0 && n.JoinURL != "" {
		return Payload{}, fmt.Errorf("node %s joins the cluster: only the founding server carries the CA", n.Hostname)
	}
	p.Files = append(p.Files, fixedFiles()...)
	p.Files = append(p.Files,
		File{Path: path.Join(Dir, "node.env"), Mode: 0o644, Data: nodeEnv(c, n, opt.BuildID, remove, caFiles)},
		File{Path: path.Join(Dir, "k3s-config.yaml"), Mode: 0o600, Data: k3sConfig(c, n, token, opt.JoinToken)},
		File{Path: path.Join(Dir, "node.json"), Mode: 0o644, Data: nodeSummary(c, n, opt, method)},
	)
	for _, name := range caFiles {
		mode := fs.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			mode = 0o600
		}
		p.Files = append(p.Files, File{Path: path.Join(Dir, "tls", name), Mode: mode, Data: opt.CAFiles[name]})
	}
	if opt.NodePassword != "" {
		p.Files = append(p.Files, File{Path: path.Join(Dir, "node-password"), Mode: 0o600, Data: []byte(opt.NodePassword + "\n")})
	}
	if n.ReportURL != "" {
		if opt.ReportKey == "" {
			return Payload{}, fmt.Errorf("node %s reports to %s, but no report key was given", n.Hostname, n.ReportURL)
		}
		p.Files = append(p.Files, File{Path: path.Join(Dir, "report.key"), Mode: 0o600, Data: []byte(opt.ReportKey + "\n")})
	}
	p.Files = append(p.Files, userFiles(n)...)
	if method == recipes.MethodCloudInit {
		p.Files = append(p.Files, File{Path: "meta-data", Mode: 0o644, Data: metaData(c, n, opt.BuildID)}, File{Path: "user-data", Mode: 0o644, Data: userData(n)})
		if nc := networkConfig(n); nc != nil {
			p.Files = append(p.Files, File{Path: "network-config", Mode: 0o600, Data: nc})
		}
	} else {
		for _, k := range keyfiles(n) {
			p.Files = append(p.Files, File{Path: path.Join(Dir, k.Path), Mode: 0o600, Data: k.Data})
		}
	}
	if a := c.Airgap; a != nil {
		p.Files = append(p.Files, airgapFiles(a)...)
	}
	sort.Slice(p.Files, func(i, j int) bool { return p.Files[i].Path < p.Files[j].Path })
	return p, nil
}

// cmdlineArgs are the arguments a node's cmdline.txt gains, and those of
// them the activator removes again.
func cmdlineArgs(c *recipes.Cluster, n *recipes.Node, method recipes.Method, buildID string) (add, remove []string) {
	add = cgroupArgs()
	if n.WiFi != nil {
		add = append(add, "cfg80211.ieee80211_regdom="+n.WiFi.Country)
	}
	add = append(add, quirksArg(n)...)
	switch method {
	case recipes.MethodSystemdRun:
		remove = systemdRunArgs()
		add = append(add, remove...)
	case recipes.MethodCloudInit:
		// As Imager 2.x does: names the datasource and pins the instance
		// id on every boot. It stays: cloud-init reads it at each boot, and
		// a boot whose seed cannot be read must not count as a new
		// instance.
		add = append(add, "ds=nocloud;i="+instanceID(c, n, buildID))
		// Until activation, cloud-init waits for the seed's partition.
		remove = mountOrderArgs()
		add = append(add, remove...)
	}
	return add, remove
}

// caFileNames are the CA files' names, sorted; each is a plain relative
// path, or the activator could be made to write outside server/tls.
func caFileNames(files map[string][]byte) []string {
	names := make([]string, 0, len(files))
	for name := range files {
		if name == "" || path.Clean(name) != name || strings.HasPrefix(name, "../") || path.IsAbs(name) || strings.ContainsAny(name, " '\"\\\n") {
			panic(fmt.Sprintf("firstboot: CA file name %q is not a plain relative path", name))
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// fixedFiles are the scripts and unit every payload carries as they are.
func fixedFiles() []File {
	var files []File
	for _, f := range []struct {
		name string
		mode fs.FileMode
	}{
		{name: "activate.sh", mode: 0o755},
		{name: "bootfacts.sh", mode: 0o644},
		{name: "firstboot.sh", mode: 0o755},
		{name: "lib.sh", mode: 0o644},
		{name: "pibake-firstboot.service", mode: 0o644},
		{name: "report.sh", mode: 0o755},
		{name: "pibake-report.service", mode: 0o644},
	} {
		files = append(files, File{Path: path.Join(Dir, f.name), Mode: f.mode, Data: script(f.name)})
	}
	return files
}

// userFiles provision the login user. Every image carries userconf.txt:
// without one, Raspberry Pi OS Lite stops at first boot in an interactive
// rename dialog on tty8 (userconf-pi's userconfig.service, armed by
// pi-gen's rename-user).
func userFiles(n *recipes.Node) []File {
	u := n.User
	hash := u.PasswordHash.Reveal()
	if hash == "" {
		hash = "*" // a locked password: SSH keys only, or no login at all
	}
	files := []File{{Path: "userconf.txt", Mode: 0o600, Data: []byte(u.Name + ":" + hash + "\n")}}
	if len(u.SSHAuthorizedKeys) > 0 {
		files = append(files, File{Path: path.Join(Dir, "authorized_keys"), Mode: 0o600, Data: []byte(strings.Join(u.SSHAuthorizedKeys, "\n") + "\n")})
	}
	if u.PasswordlessSudo {
		files = append(files, File{Path: path.Join(Dir, "sudoers"), Mode: 0o440, Data: sudoers(u.Name)})
	}
	if n.SSH {
		files = append(files, File{Path: "ssh", Mode: 0o644})
	}
	return files
}

// sudoers is the sudoers rule that gives user sudo without a password, as
// raspi-config's do_sudo_pass writes it. The user name is validated by
// recipes, so it cannot change the rule's syntax.
func sudoers(user string) []byte {
	return []byte(user + " ALL=(ALL) NOPASSWD: ALL\n")
}

// nodeEnv renders node.env: the node's settings as shell assignments, read
// by the activator and the first-boot script. It holds no secret.
func nodeEnv(c *recipes.Cluster, n *recipes.Node, buildID string, cmdlineRemove, caFiles []string) []byte {
	wifiCountry := ""
	if n.WiFi != nil {
		wifiCountry = n.WiFi.Country
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
		{name: "PIBAKE_K3S_ARGS", value: shellJoin(n.K3sArgs)},
		{name: "PIBAKE_APT_UPGRADE", value: boolFlag(n.Apt.Upgrade)},
		{name: "PIBAKE_MODULES_EXTRA", value: boolFlag(n.Apt.ModulesExtra)},
		{name: "PIBAKE_APT_PACKAGES", value: strings.Join(n.Apt.Packages, " ")},
		{name: "PIBAKE_USER", value: n.User.Name},
		{name: "PIBAKE_USER_LOGIN", value: boolFlag(n.User.CanLogIn())},
		{name: "PIBAKE_SSH", value: boolFlag(n.SSH)},
		{name: "PIBAKE_WIFI_COUNTRY", value: wifiCountry},
		{name: "PIBAKE_TIMEZONE", value: n.Timezone},
		{name: "PIBAKE_CMDLINE_REMOVE", value: strings.Join(cmdlineRemove, " ")},
		{name: "PIBAKE_CA_FILES", value: strings.Join(caFiles, " ")},
		{name: "PIBAKE_REPORT_URL", value: n.ReportURL},
	}
	vars = append(vars, hardwareEnv(n)...)
	var b strings.Builder
	b.WriteString("# Written by pibake: this node's first-boot settings. No secrets here.\n")
	b.WriteString("# shellcheck disable=SC2034 # read by the scripts that source this file\n")
	for _, v := range vars {
		fmt.Fprintf(&b, "%s=%s\n", v.name, shellQuote(v.value))
	}
	return []byte(b.String())
}

func boolFlag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// shellQuote quotes s for POSIX sh so that it is one word with exactly
// this value, whatever it contains.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=+,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellJoin quotes each word and joins them, for `eval "set -- $x"`.
func shellJoin(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = shellQuote(w)
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

// Fingerprint identifies the fixed scripts every payload carries, for a
// build's inputs hash: a changed script must rebuild the nodes even when
// pibake's version string did not move.
func Fingerprint() string {
	h := sha256.New()
	entries, err := templateFS.ReadDir("templates")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		fmt.Fprintf(h, "%s\n", e.Name())
		h.Write(script(e.Name()))
	}
	return hex.EncodeToString(h.Sum(nil))
}
