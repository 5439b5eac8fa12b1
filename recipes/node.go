package recipes

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode"

	"github.com/pibake/pibake/recipes/hardware"

	"github.com/pibake/pibake/recipes/diag"
	"github.com/pibake/pibake/recipes/model"

	"github.com/hashicorp/hcl/v2"
)

// resolveNode turns one merged node spec into a Node, checking every value
// that can be checked without looking at the other nodes.
func resolveNode(spec nodeSpec, meta diag.NodeMeta, group string, index int, counted bool) (Node, hcl.Diagnostics) {
	at := func(path string) *hcl.Range { return meta.Ranges.At(path, meta.DefRange) }
	n := Node{Group: group, Index: index, SSH: spec.SSH}
	var diags hcl.Diagnostics
	for _, resolve := range []func(nodeSpec, *Node, diag.NodeMeta, func(string) *hcl.Range) hcl.Diagnostics{
		resolveRole,
		func(spec nodeSpec, n *Node, meta diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
			return resolveHostname(spec, n, meta, at, counted)
		},
		func(spec nodeSpec, n *Node, _ diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
			return resolveNetwork(spec, n, at)
		},
		resolveKubernetes,
		resolveMachine,
		func(spec nodeSpec, n *Node, _ diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
			return append(resolveUser(spec.User, n, at), resolveWiFi(spec.WiFi, n, at)...)
		},
		resolveSoftware,
	} {
		diags = append(diags, resolve(spec, &n, meta, at)...)
	}
	return n, diags
}

func resolveRole(spec nodeSpec, n *Node, meta diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
	switch Role(spec.Role) {
	case RoleServer, RoleAgent:
		n.Role = Role(spec.Role)
	case "":
		return hcl.Diagnostics{diag.ErrorAt(&meta.DefRange, "Missing role",
			"Every node needs role = \"server\" or role = \"agent\".")}
	default:
		return hcl.Diagnostics{diag.ErrorAt(at("role"), "Invalid role",
			"role is %q; it must be \"server\" or \"agent\".", spec.Role)}
	}
	return nil
}

// resolveHostname: the hostname written, or the block's label (with its
// count.index + 1 when counted).
func resolveHostname(spec nodeSpec, n *Node, meta diag.NodeMeta, at func(string) *hcl.Range, counted bool) hcl.Diagnostics {
	n.Hostname = spec.Hostname
	hostRange := at("hostname")
	if !meta.Ranges.Has("hostname") {
		hostRange = &meta.NameRange
		n.Hostname = n.Group
		if counted {
			n.Hostname = fmt.Sprintf("%s-%d", n.Group, n.Index+1)
		}
	}
	if hostnamePattern.MatchString(n.Hostname) {
		return nil
	}
	hint := ""
	if strings.ToLower(n.Hostname) != n.Hostname {
		hint = " Kubernetes node names are lowercase: use lower() or rename it."
	}
	return hcl.Diagnostics{diag.ErrorAt(hostRange, "Invalid hostname",
		"%q is not a valid hostname: use 1 to 63 lowercase letters, digits and hyphens, starting and ending with a letter or digit (RFC 1123).%s", n.Hostname, hint)}
}

// resolveKubernetes: where the node joins, its labels, taints and k3s
// arguments.
func resolveKubernetes(spec nodeSpec, n *Node, _ diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if spec.Server != "" {
		if u, ok := model.JoinURL(spec.Server); ok {
			n.JoinURL = u
		} else {
			diags = append(diags, diag.ErrorAt(at("server"), "Invalid server address",
				"server %q must be an IP address or DNS name (\"192.168.1.10\") or an https:// URL.", spec.Server))
		}
	}
	n.Labels = spec.Labels
	for _, k := range sortedKeys(spec.Labels) {
		v := spec.Labels[k]
		switch {
		case !labelKeyPattern.MatchString(k):
			diags = append(diags, diag.ErrorAt(at("labels"), "Invalid label", "Label key %q is not a valid Kubernetes label key.", k))
		case strings.Contains(k, "kubernetes.io/") || strings.Contains(k, "k8s.io/"):
			diags = append(diags, diag.ErrorAt(at("labels"), "Reserved label",
				"Label %q uses a kubernetes.io or k8s.io prefix, which the kubelet refuses to set at registration and k3s fails to start with. Use your own prefix, such as lab.example/%s.", k, k[strings.LastIndex(k, "/")+1:]))
		case !labelValuePattern.MatchString(v):
			diags = append(diags, diag.ErrorAt(at("labels"), "Invalid label", "Label %q has value %q, which is not a valid Kubernetes label value (63 characters at most: letters, digits, '-', '_', '.').", k, v))
		}
	}
	n.Taints = spec.Taints
	for _, t := range spec.Taints {
		if !taintPattern.MatchString(t) {
			diags = append(diags, diag.ErrorAt(at("taints"), "Invalid taint",
				"Taint %q must look like key=value:Effect or key:Effect, with Effect NoSchedule, PreferNoSchedule or NoExecute.", t))
		}
	}
	n.K3sArgs = spec.K3sArgs
	for _, a := range spec.K3sArgs {
		flag, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case !strings.HasPrefix(a, "-"):
			diags = append(diags, diag.ErrorAt(at("k3s_args"), "Invalid k3s argument", "%q is not a flag; k3s_args entries look like \"--disable=traefik\".", a))
		case strings.IndexFunc(a, unicode.IsControl) >= 0:
			diags = append(diags, diag.ErrorAt(at("k3s_args"), "Invalid k3s argument", "%q holds a control character (a newline, a tab, NUL…), which no k3s flag takes.", a))
		case slices.Contains([]string{"token", "agent-token", "token-file", "server", "cluster-init", "node-name"}, flag):
			diags = append(diags, diag.ErrorAt(at("k3s_args"), "Argument managed by pibake",
				"--%s is set by pibake from the recipe (cluster.token, server, hostname); remove it from k3s_args.", flag))
		}
	}
	return diags
}

// resolveMachine: timezone, storage and declared hardware. storage is
// the older, coarser attribute: hardware.boot_device implies it, and the
// two must agree where both are written.
func resolveMachine(spec nodeSpec, n *Node, meta diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	n.Timezone = spec.Timezone
	if n.Timezone != "" && !timezonePattern.MatchString(n.Timezone) {
		diags = append(diags, diag.ErrorAt(at("timezone"), "Invalid timezone", "timezone %q is not a tz database name such as \"Europe/Berlin\" or \"UTC\".", n.Timezone))
	}
	n.Storage = Storage(spec.Storage)
	if n.Storage != StorageUnknown && !slices.Contains(Storages, n.Storage) {
		diags = append(diags, diag.ErrorAt(at("storage"), "Invalid storage", "storage is %q; it must be %s.", n.Storage, diag.QuoteList(Storages)))
	}
	diags = append(diags, hardware.Resolve(spec.Hardware, n, meta, at)...)
	switch implied := n.Hardware.BootDevice.Storage(); {
	case implied == StorageUnknown:
	case n.Storage == StorageUnknown:
		n.Storage = implied
	case n.Storage != implied:
		diags = append(diags, diag.ErrorAt(at("hardware.boot_device"), "Storage and boot device disagree",
			"boot_device %q means storage %q, but storage is %q (%s). storage is the older, coarser attribute: remove it where boot_device is set.",
			n.Hardware.BootDevice, implied, n.Storage, at("storage")))
	}
	return diags
}

// resolveSoftware: apt, the first-boot method and where it reports.
func resolveSoftware(spec nodeSpec, n *Node, _ diag.NodeMeta, at func(string) *hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if a := spec.Apt; a != nil {
		n.Apt = Apt{Upgrade: a.Upgrade, Packages: a.Packages, ModulesExtra: a.ModulesExtra}
		for _, p := range a.Packages {
			if !packagePattern.MatchString(p) {
				diags = append(diags, diag.ErrorAt(at("apt.packages"), "Invalid package name", "%q is not a Debian package name (optionally name=version).", p))
			}
		}
	}
	if r := spec.Report; r != nil {
		n.ReportURL = r.URL
		diags = append(diags, checkReportURL(n.ReportURL, at("report.url"))...)
	}
	n.Firstboot.Method = MethodAuto
	if f := spec.Firstboot; f != nil && f.Method != "" {
		n.Firstboot.Method = Method(f.Method)
		if !slices.Contains(Methods, n.Firstboot.Method) {
			diags = append(diags, diag.ErrorAt(at("firstboot.method"), "Invalid first-boot method",
				"method is %q; use one of %s.", f.Method, diag.QuoteList(Methods)))
		}
	}
	return diags
}

func resolveNetwork(spec nodeSpec, n *Node, at func(string) *hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if spec.IP != "" {
		p, err := netip.ParsePrefix(spec.IP)
		switch {
		case err != nil && isAddr(spec.IP):
			diags = append(diags, diag.ErrorAt(at("ip"), "Invalid IP address",
				"ip %q has no prefix length; write it with one, such as \"%s/24\".", spec.IP, spec.IP))
		case err != nil:
			diags = append(diags, diag.ErrorAt(at("ip"), "Invalid IP address",
				"ip %q is not an IPv4 address with a prefix length, such as \"192.168.1.10/24\".", spec.IP))
		case !p.Addr().Is4():
			diags = append(diags, diag.ErrorAt(at("ip"), "Invalid IP address", "ip %q is not IPv4; pibake configures static IPv4 addresses (IPv6 comes from router advertisements).", spec.IP))
		case p.Bits() < 8 || p.Bits() > 30:
			diags = append(diags, diag.ErrorAt(at("ip"), "Invalid IP address", "ip %q has prefix length /%d; use /8 to /30.", spec.IP, p.Bits()))
		case p.Addr() == p.Masked().Addr() || p.Addr() == lastAddr(p):
			diags = append(diags, diag.ErrorAt(at("ip"), "Invalid IP address", "ip %q is the network or broadcast address of %s; pick a host address.", spec.IP, p.Masked()))
		default:
			n.Address = p
		}
	}
	if spec.Gateway != "" {
		gw, err := netip.ParseAddr(spec.Gateway)
		switch {
		case err != nil || !gw.Is4():
			diags = append(diags, diag.ErrorAt(at("gateway"), "Invalid gateway", "gateway %q is not an IPv4 address.", spec.Gateway))
		case spec.IP == "":
			diags = append(diags, diag.ErrorAt(at("gateway"), "Gateway without a static IP", "gateway is only used with a static ip; set ip too, or remove gateway to use DHCP."))
		case n.Address.IsValid() && !n.Address.Masked().Contains(gw):
			diags = append(diags, diag.ErrorAt(at("gateway"), "Gateway outside the node's network",
				"gateway %s is not inside %s, the network of ip %s, so it cannot be reached directly.", gw, n.Address.Masked(), n.Address))
		case n.Address.IsValid() && n.Address.Addr() == gw:
			diags = append(diags, diag.ErrorAt(at("gateway"), "Gateway is the node itself", "gateway %s is the node's own address.", gw))
		default:
			n.Gateway = gw
		}
	}
	for _, s := range spec.DNS {
		a, err := netip.ParseAddr(s)
		if err != nil {
			diags = append(diags, diag.ErrorAt(at("dns"), "Invalid DNS server", "dns entry %q is not an IP address.", s))
			continue
		}
		n.DNS = append(n.DNS, a)
	}
	if len(spec.DNS) > 0 && spec.IP == "" {
		diags = append(diags, diag.ErrorAt(at("dns"), "DNS without a static IP", "dns is only used with a static ip; with DHCP the DHCP server names the DNS servers."))
	}
	return diags
}

func resolveUser(u *userSpec, n *Node, at func(string) *hcl.Range) hcl.Diagnostics {
	if u == nil {
		n.User = &User{Name: DefaultUserName, Default: true}
		return nil
	}
	var diags hcl.Diagnostics
	n.User = &User{Name: u.Name, PasswordHash: Secret(u.PasswordHash)}
	if n.User.Name == "" {
		n.User.Name = DefaultUserName
	}
	if !userNamePattern.MatchString(n.User.Name) || n.User.Name == "root" {
		diags = append(diags, diag.ErrorAt(at("user.name"), "Invalid user name",
			"user name %q is not one Raspberry Pi OS accepts: 1 to 32 lowercase letters, digits and hyphens, starting with a letter, and not root. The OS refuses any other name at first boot and waits at an interactive dialog instead.", n.User.Name))
	}
	if u.PasswordHash != "" && !cryptHashPattern.MatchString(u.PasswordHash) {
		diags = append(diags, diag.ErrorAt(at("user.password_hash"), "Invalid password hash",
			"password_hash must be a crypt(3) hash such as $6$… (SHA-512), $y$… (yescrypt), $5$… or $2b$…, never a plain password. Make one with: openssl passwd -6"))
	}
	for _, k := range u.SSHAuthorizedKeys {
		k = strings.TrimSpace(k)
		if !sshKeyPattern.MatchString(k) || strings.ContainsAny(k, "\r\n") {
			diags = append(diags, diag.ErrorAt(at("user.ssh_authorized_keys"), "Invalid SSH public key",
				"Each ssh_authorized_keys entry must be one OpenSSH public key line, such as the content of ~/.ssh/id_ed25519.pub (not the private key)."))
			continue
		}
		n.User.SSHAuthorizedKeys = append(n.User.SSHAuthorizedKeys, k)
	}
	// A user with keys but no password could never type a sudo password.
	n.User.PasswordlessSudo = n.User.PasswordHash == "" && len(n.User.SSHAuthorizedKeys) > 0
	if u.PasswordlessSudo != nil {
		n.User.PasswordlessSudo = *u.PasswordlessSudo
	}
	return diags
}

func resolveWiFi(w *wifiSpec, n *Node, at func(string) *hcl.Range) hcl.Diagnostics {
	if w == nil {
		return nil
	}
	var diags hcl.Diagnostics
	psk := strings.TrimRight(w.PSK, "\r\n") // file() keeps the newline
	n.WiFi = &WiFi{SSID: w.SSID, PSK: Secret(psk), Country: strings.ToUpper(w.Country)}
	if len(w.SSID) < 1 || len(w.SSID) > 32 {
		diags = append(diags, diag.ErrorAt(at("wifi.ssid"), "Invalid Wi-Fi SSID", "ssid must be 1 to 32 bytes long; it is %d.", len(w.SSID)))
	}
	if !(len(psk) >= 8 && len(psk) <= 63 || hexPSKPattern.MatchString(psk)) {
		diags = append(diags, diag.ErrorAt(at("wifi.psk"), "Invalid Wi-Fi key",
			"psk must be a WPA passphrase of 8 to 63 characters or 64 hexadecimal digits; it is %d characters.", len(psk)))
	}
	if !countryPattern.MatchString(w.Country) {
		diags = append(diags, diag.ErrorAt(at("wifi.country"), "Invalid Wi-Fi country",
			"country must be a two-letter ISO 3166 code such as \"DE\" or \"US\": the radio stays off without it."))
	}
	return diags
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
