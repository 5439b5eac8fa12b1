// Package model is a recipe as the rest of pibake sees it: plain Go
// values, every node resolved, with no HCL left; recipes.Load makes it.
package model

import (
	"fmt"
	"net/netip"
)

// Role is a node's k3s role.
type Role string

// The two k3s roles a node can have.
const (
	RoleServer Role = "server"
	RoleAgent  Role = "agent"
)

// Secret holds a value that must never reach a log, a plan or an error
// message: the cluster token, password hashes, Wi-Fi keys. Every way fmt and
// encoding/json print it yields "<redacted>"; Reveal gives the real value to
// the code that writes it into an image.
type Secret string

const redacted = "<redacted>"

// String implements fmt.Stringer without revealing the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer, so %#v does not reveal the value.
func (s Secret) GoString() string { return `recipes.Secret("` + s.String() + `")` }

// MarshalText implements encoding.TextMarshaler, so JSON output is redacted.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret value itself. Call it only where the value is
// written into an image, never where it could be printed.
func (s Secret) Reveal() string { return string(s) }

// Recipe is a validated recipe with every node resolved.
type Recipe struct {
	// Path is the file or directory given to Load; Dir is the directory
	// that relative paths in the recipe are resolved against.
	Path string
	Dir  string
	// Files are the .hcl files read, in the order they were read.
	Files []string

	Image   Image
	Cluster Cluster
	Nodes   []Node
	Output  Output
}

// Servers returns the number of server nodes.
func (r *Recipe) Servers() int {
	n := 0
	for _, node := range r.Nodes {
		if node.Role == RoleServer {
			n++
		}
	}
	return n
}

// Agents returns the number of agent nodes.
func (r *Recipe) Agents() int { return len(r.Nodes) - r.Servers() }

// DefaultImageSource is the base image used when a recipe names none.
const DefaultImageSource = "raspios_lite_arm64:latest"

// Image says which Raspberry Pi OS image the nodes are built from.
type Image struct {
	// Source is DefaultImageSource, an http(s) or file:// URL, or a local
	// .img or .img.xz path (made absolute).
	Source string `json:"source"`
	// SHA256 optionally pins the source file (lowercase hex).
	SHA256 string `json:"sha256,omitempty"`
}

// Cluster holds the settings shared by every node.
type Cluster struct {
	Name string
	// Token is the shared secret that servers and agents join with. Empty
	// means the recipe gives none and the build generates one.
	Token Secret
	// AgentToken, when set, is the only token agent images carry.
	AgentToken Secret
	// Exactly one of K3sVersion and K3sChannel is set.
	K3sVersion string
	K3sChannel string
	// ServerAddress is where agents and extra servers join: cluster.server_ip,
	// or the founding server's static address. Empty when neither is known.
	ServerAddress    string
	FlannelBackend   string
	ClusterCIDR      netip.Prefix
	ServiceCIDR      netip.Prefix
	TLSSAN           []string
	InstallScriptURL string
	AgentJoinBatch   int
	// CA says who makes the cluster's certificate authorities.
	CA CAMode
	// APIServer is the URL kubectl reaches the cluster at, for the admin
	// kubeconfig: https://<ServerAddress>:6443, else the first tls_san,
	// else the founding server's mDNS name (<hostname>.local), which the
	// servers then carry as a tls-san.
	APIServer string
	// Airgap, when set, names local k3s files that travel in the images.
	Airgap *Airgap
	// ReportURL, when set, is where every node reports its first boot
	// (`pibake watch` listens there), unless the node names its own.
	ReportURL string
}

// CAMode says who makes a cluster's certificate authorities.
type CAMode string

// The CA modes a recipe may name.
const (
	// CANone leaves it to k3s: the founding server makes its own CAs at
	// first start, and joining nodes trust the first server that answers
	// at the join address (short tokens).
	CANone CAMode = "none"
	// CAGenerate has pibake make them at build time: the founding server
	// starts with them, every joining node pins them in a full token, and
	// the build writes an admin kubeconfig.
	CAGenerate CAMode = "generate"
)

// CAModes lists the CA modes a recipe may name.
var CAModes = []CAMode{CANone, CAGenerate}

// Airgap names the k3s files for an install without internet access.
// Paths are absolute.
type Airgap struct {
	K3sBinary     string `json:"k3s_binary,omitempty"`
	Images        string `json:"images,omitempty"`
	InstallScript string `json:"install_script,omitempty"`
}

// Output says where and how images are written.
type Output struct {
	// Dir is absolute when the recipe sets it; empty means the caller's
	// default (./out).
	Dir      string `json:"dir,omitempty"`
	Compress bool   `json:"compress"`
}

// Node is one machine, with its own image.
type Node struct {
	Hostname string
	Role     Role
	// Group is the label of the node block that produced this node and
	// Index its count.index (0 without count).
	Group string
	Index int

	// ClusterInit is true on the server that founds an HA (embedded etcd)
	// cluster.
	ClusterInit bool
	// JoinURL is https://<address>:6443 for every node that joins another;
	// empty on the founding (or only) server.
	JoinURL string
	// JoinBatch numbers agents in groups of Cluster.AgentJoinBatch, from 0;
	// batch n starts joining after n delays. Always 0 for servers.
	JoinBatch int

	// Address is the static IPv4 address with its prefix; invalid (the
	// zero value) means DHCP.
	Address netip.Prefix
	Gateway netip.Addr
	DNS     []netip.Addr

	Labels    map[string]string
	Taints    []string
	K3sArgs   []string
	SSH       bool
	Timezone  string
	Storage   Storage
	Hardware  Hardware
	User      *User
	Apt       Apt
	WiFi      *WiFi
	Firstboot Firstboot
	// ReportURL is where the node reports its first boot: its own report
	// block's, else the cluster's; empty when it does not report.
	ReportURL string
}

// Storage is what a node boots from, as the recipe declares it: storage,
// or what hardware.boot_device implies (sd, or ssd for usb and nvme).
type Storage string

// The storages a recipe may name; StorageUnknown when it says nothing.
const (
	StorageUnknown Storage = ""
	StorageSSD     Storage = "ssd"
	StorageSD      Storage = "sd"
)

// Storages lists the storages a recipe may name.
var Storages = []Storage{StorageSSD, StorageSD}

// DefaultUserName is the login user of a node whose recipe names none: the
// name Raspberry Pi OS gives its first user.
const DefaultUserName = "pi"

// User is the login account configured through userconf.txt. Every node
// has one: without a user block it is DefaultUserName with a locked
// password, because a Raspberry Pi OS Lite image without userconf.txt
// stops at an interactive rename dialog on first boot.
type User struct {
	Name              string   `json:"name"`
	PasswordHash      Secret   `json:"password_hash,omitempty"`
	SSHAuthorizedKeys []string `json:"ssh_authorized_keys"`
	// PasswordlessSudo gives the user sudo without a password. It defaults
	// to true for a user who logs in with SSH keys only (there is no
	// password to type) and false otherwise.
	PasswordlessSudo bool `json:"passwordless_sudo"`
	// Default is true when the recipe has no user block.
	Default bool `json:"default,omitempty"`
}

// CanLogIn reports whether anyone can log in as u: with a password or an
// SSH key.
func (u *User) CanLogIn() bool {
	return u.PasswordHash != "" || len(u.SSHAuthorizedKeys) > 0
}

// Apt says what the first boot installs with apt.
type Apt struct {
	Upgrade      bool     `json:"upgrade"`
	Packages     []string `json:"packages"`
	ModulesExtra bool     `json:"modules_extra"`
}

// WiFi is a wireless network the node joins.
type WiFi struct {
	SSID    string `json:"ssid"`
	PSK     Secret `json:"psk"`
	Country string `json:"country"`
}

// Firstboot selects how the first-boot payload is activated.
type Firstboot struct {
	Method Method `json:"method"`
}

// Method is how a node's first-boot payload gets activated on the Pi.
type Method string

// The activation methods. MethodAuto is resolved per base image, in one
// place: firstboot.ChooseMethod.
const (
	MethodAuto Method = "auto"
	// MethodSystemdRun runs the activator through systemd.run= on the
	// kernel command line, in a boot of its own (Bookworm).
	MethodSystemdRun Method = "systemd-run"
	// MethodCloudInit runs it from a cloud-init NoCloud seed on the boot
	// partition (Trixie and later).
	MethodCloudInit Method = "cloud-init"
)

// Methods lists the methods a recipe may name.
var Methods = []Method{MethodAuto, MethodSystemdRun, MethodCloudInit}

// Plural formats a count with its noun: "1 node", "3 nodes".
func Plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
