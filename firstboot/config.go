package firstboot

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/pibake/pibake/recipes"
)

// k3sConfig renders /etc/rancher/k3s/config.yaml. Servers and agents get
// different keys, because agents refuse server-only ones ("flag provided
// but not defined"). Every server gets the same cluster-wide settings,
// which k3s requires to match.
//
// A joining node carries joinToken when there is one: the full token that
// pins the cluster CA, so it checks the server before sending its secret.
func k3sConfig(c *recipes.Cluster, n *recipes.Node, token, joinToken string) []byte {
	var y yamlWriter
	y.comment(fmt.Sprintf("Written by pibake for %s (%s). k3s reads it at every start; keys are k3s's flag names.", n.Hostname, n.Role))
	if n.Role == recipes.RoleAgent {
		// An agent carries the agent token when there is one, so its card
		// cannot be used to join a server.
		if at := c.AgentToken.Reveal(); at != "" {
			token = at
		}
		if joinToken != "" {
			token = joinToken
		}
		y.str("server", n.JoinURL)
		y.str("token", token)
		y.str("node-name", n.Hostname)
		if n.Address.IsValid() {
			y.str("node-ip", n.Address.Addr().String())
		}
		y.list("node-label", labels(n.Labels))
		y.list("node-taint", n.Taints)
		return y.bytes()
	}
	if joinToken != "" && n.JoinURL != "" {
		token = joinToken
	}
	y.str("token", token)
	if at := c.AgentToken.Reveal(); at != "" {
		y.str("agent-token", at)
	}
	if n.ClusterInit {
		y.line("cluster-init: true")
	}
	if n.JoinURL != "" {
		y.str("server", n.JoinURL)
	}
	y.str("node-name", n.Hostname)
	if n.Address.IsValid() {
		y.str("node-ip", n.Address.Addr().String())
	}
	y.str("flannel-backend", c.FlannelBackend)
	y.str("cluster-cidr", c.ClusterCIDR.String())
	y.str("service-cidr", c.ServiceCIDR.String())
	y.list("tls-san", tlsSANs(c))
	y.list("node-label", labels(n.Labels))
	y.list("node-taint", n.Taints)
	y.str("write-kubeconfig-mode", "0600")
	return y.bytes()
}

// tlsSANs adds the join address and the API server's host to the
// recipe's SANs, so that nodes that join through a DNS name or virtual IP,
// and kubectl with the admin kubeconfig, can verify the server. k3s adds
// its own on top (127.0.0.1, ::1, localhost, the node's name and
// addresses, the first service address, kubernetes.default…: see
// ServingSANs).
func tlsSANs(c *recipes.Cluster) []string {
	sans := append([]string(nil), c.TLSSAN...)
	for _, host := range []string{c.ServerAddress, apiHost(c)} {
		if host != "" && !slices.Contains(sans, host) {
			sans = append(sans, host)
		}
	}
	return sans
}

func apiHost(c *recipes.Cluster) string {
	u, err := url.Parse(c.APIServer)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// ServingSANs are the names and addresses k3s puts in a server's serving
// certificates, for checking that every address a client is given is
// covered: the config's tls-san, then what k3s adds itself
// (pkg/cli/server/server.go: 127.0.0.1, ::1, localhost, the node name and
// node IPs, the first address of the service network; deps.go
// genServerCerts: kubernetes, kubernetes.default, kubernetes.default.svc,
// kubernetes.default.svc.cluster.local).
func ServingSANs(c *recipes.Cluster, n *recipes.Node) []string {
	sans := tlsSANs(c)
	sans = append(sans, "127.0.0.1", "::1", "localhost", n.Hostname)
	if n.Address.IsValid() {
		sans = append(sans, n.Address.Addr().String())
	}
	if c.ServiceCIDR.IsValid() {
		sans = append(sans, c.ServiceCIDR.Addr().Next().String())
	}
	return append(sans, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
}

func labels(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// yamlWriter writes the small YAML subset pibake needs. Every string is a
// double-quoted scalar (JSON string syntax, which YAML accepts), so no
// value can change the document's structure.
type yamlWriter struct{ b strings.Builder }

func (y *yamlWriter) comment(s string) { fmt.Fprintf(&y.b, "# %s\n", s) }
func (y *yamlWriter) line(s string)    { y.b.WriteString(s + "\n") }
func (y *yamlWriter) str(key, value string) {
	fmt.Fprintf(&y.b, "%s: %s\n", key, yamlQuote(value))
}
func (y *yamlWriter) list(key string, values []string) {
	if len(values) == 0 {
		return
	}
	fmt.Fprintf(&y.b, "%s:\n", key)
	for _, v := range values {
		fmt.Fprintf(&y.b, "  - %s\n", yamlQuote(v))
	}
}
func (y *yamlWriter) bytes() []byte { return []byte(y.b.String()) }

// yamlQuote returns s as a YAML double-quoted scalar. Every character YAML
// does not allow in a stream as it is (C0 and C1 controls, DEL, U+FEFF,
// the non-characters U+FFFE and U+FFFF) is escaped, and so are the line
// separators U+2028 and U+2029 (line breaks to YAML 1.1 readers), the
// quote and the backslash; invalid UTF-8 becomes U+FFFD. JSON's quoting,
// which YAML mostly accepts, lets DEL and C1 controls through, which YAML
// refuses (found by FuzzYAMLQuote).
func yamlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20, r >= 0x7f && r <= 0x9f, r == 0x2028, r == 0x2029, r == 0xfeff, r == 0xfffe, r == 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r) // a bad byte arrives here as U+FFFD
		}
	}
	b.WriteByte('"')
	return b.String()
}

// keyfileOut is a NetworkManager connection profile.
type keyfileOut struct {
	Path string
	Data []byte
}

// keyfiles renders NetworkManager profiles for a static address and for
// Wi-Fi. The static address goes on wlan0 when the node has Wi-Fi (such
// nodes are usually Wi-Fi only), otherwise on eth0. A node with neither
// needs none: the image's default is DHCP on eth0.
func keyfiles(n *recipes.Node) []keyfileOut {
	var out []keyfileOut
	if n.WiFi == nil && n.Address.IsValid() {
		var k keyfile
		k.connection(n.Hostname, "ethernet", "eth0", 100)
		k.ipv4(n)
		k.section("ipv6")
		k.kv("method", "auto")
		out = append(out, keyfileOut{Path: "pibake-eth0.nmconnection", Data: k.bytes()})
	}
	if w := n.WiFi; w != nil {
		var k keyfile
		k.connection(n.Hostname, "wifi", "wlan0", 50)
		k.kv("mode", "infrastructure")
		k.kv("ssid", w.SSID)
		k.section("wifi-security")
		k.kv("key-mgmt", "wpa-psk")
		k.kv("psk", w.PSK.Reveal())
		k.ipv4(n)
		k.section("ipv6")
		k.kv("method", "auto")
		out = append(out, keyfileOut{Path: "pibake-wifi.nmconnection", Data: k.bytes()})
	}
	return out
}

type keyfile struct{ b strings.Builder }

func (k *keyfile) section(name string) {
	if k.b.Len() > 0 {
		k.b.WriteString("\n")
	}
	fmt.Fprintf(&k.b, "[%s]\n", name)
}

// connection starts a profile: its [connection] section and the empty
// section of its type, which the type's settings follow.
func (k *keyfile) connection(host, kind, iface string, priority int) {
	id := "pibake-eth0"
	if kind == "wifi" {
		id = "pibake-wifi"
	}
	k.section("connection")
	k.kv("id", id)
	k.kv("uuid", profileUUID(host, iface))
	k.kv("type", kind)
	k.kv("interface-name", iface)
	k.kv("autoconnect", "true")
	k.kv("autoconnect-priority", fmt.Sprint(priority))
	k.section(kind)
}

func (k *keyfile) kv(key, value string) { fmt.Fprintf(&k.b, "%s=%s\n", key, keyfileEscape(value)) }

func (k *keyfile) ipv4(n *recipes.Node) {
	k.section("ipv4")
	if !n.Address.IsValid() {
		k.kv("method", "auto")
		return
	}
	k.kv("method", "manual")
	addr := n.Address.String()
	if n.Gateway.IsValid() {
		addr += "," + n.Gateway.String()
	}
	k.kv("address1", addr)
	if len(n.DNS) > 0 {
		k.kv("dns", joinAddrs(n.DNS, ";")+";")
	}
}

func (k *keyfile) bytes() []byte { return []byte(k.b.String()) }

// keyfileEscape escapes a value for a GKeyFile (NetworkManager keyfile):
// backslash, line breaks, tabs and leading space.
func keyfileEscape(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == ' ' && i == 0:
			b.WriteString(`\s`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// profileUUID is a stable (version 5 style) UUID for one node's profile.
func profileUUID(host, iface string) string {
	s := sha256.Sum256([]byte("pibake-nm\x00" + host + "\x00" + iface))
	s[6] = s[6]&0x0f | 0x50
	s[8] = s[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

func joinAddrs(addrs []netip.Addr, sep string) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, sep)
}

// networkConfig renders cloud-init's network-config (netplan v2) for a
// static address or Wi-Fi, or nil when DHCP on eth0 is all the node needs.
func networkConfig(n *recipes.Node) []byte {
	if n.WiFi == nil && !n.Address.IsValid() {
		return nil
	}
	var b strings.Builder
	b.WriteString("# Written by pibake. Read by cloud-init on first boot, then removed (it holds the Wi-Fi key).\nnetwork:\n  version: 2\n")
	static := func(indent string) {
		fmt.Fprintf(&b, "%sdhcp4: false\n%saddresses: [%s]\n", indent, indent, yamlQuote(n.Address.String()))
		if n.Gateway.IsValid() {
			fmt.Fprintf(&b, "%sroutes:\n%s  - to: default\n%s    via: %s\n", indent, indent, indent, yamlQuote(n.Gateway.String()))
		}
		if len(n.DNS) > 0 {
			q := make([]string, len(n.DNS))
			for i, a := range n.DNS {
				q[i] = yamlQuote(a.String())
			}
			fmt.Fprintf(&b, "%snameservers:\n%s  addresses: [%s]\n", indent, indent, strings.Join(q, ", "))
		}
	}
	b.WriteString("  ethernets:\n    eth0:\n")
	if n.WiFi == nil {
		static("      ")
	} else {
		b.WriteString("      dhcp4: true\n      optional: true\n")
	}
	if w := n.WiFi; w != nil {
		b.WriteString("  wifis:\n    wlan0:\n")
		if n.Address.IsValid() {
			static("      ")
		} else {
			b.WriteString("      dhcp4: true\n")
		}
		fmt.Fprintf(&b, "      regulatory-domain: %s\n      access-points:\n        %s:\n          password: %s\n",
			yamlQuote(w.Country), yamlQuote(w.SSID), yamlQuote(w.PSK.Reveal()))
	}
	return []byte(b.String())
}

func metaData(c *recipes.Cluster, n *recipes.Node, buildID string) []byte {
	return []byte(fmt.Sprintf("# Written by pibake.\ninstance-id: %s\nlocal-hostname: %s\n", instanceID(c, n, buildID), yamlQuote(n.Hostname)))
}

// userData runs the activator from cloud-init; everything else stays in
// pibake's own folder, as with the systemd-run method.
func userData(n *recipes.Node) []byte {
	return []byte(fmt.Sprintf(`#cloud-config
# Written by pibake for %s: cloud-init runs pibake's activator once.
hostname: %s
manage_etc_hosts: false
runcmd:
  - [sh, -c, "PIBAKE_METHOD=cloud-init sh /boot/firmware/%s/activate.sh"]
`, n.Hostname, yamlQuote(n.Hostname), Dir))
}

// nodeSummary is node.json: what `pibake inspect` shows of a built image.
// No secrets.
func nodeSummary(c *recipes.Cluster, n *recipes.Node, opt Options, method recipes.Method) []byte {
	ca := ""
	switch {
	case len(opt.CAFiles) > 0:
		ca = CACarries
	case opt.CAHash != "":
		ca = CAPins
	}
	sum := Summary{
		Hostname: n.Hostname, Role: string(n.Role), Cluster: c.Name, Joins: n.JoinURL, Init: n.ClusterInit,
		Method: method, BuildID: opt.BuildID, CA: ca, CAHash: opt.CAHash, NodePassword: opt.NodePassword != "",
		ReportURL: n.ReportURL,
	}
	if !n.Hardware.IsZero() {
		h := n.Hardware
		sum.Hardware = &h
	}
	b, _ := json.MarshalIndent(sum, "", "  ")
	return append(b, '\n')
}

// Summary is node.json: what `pibake inspect` shows of a built image. It
// holds no secret.
type Summary struct {
	Hostname string         `json:"hostname"`
	Role     string         `json:"role"`
	Cluster  string         `json:"cluster"`
	Joins    string         `json:"joins,omitempty"`
	Init     bool           `json:"cluster_init,omitempty"`
	Method   recipes.Method `json:"method"`
	BuildID  string         `json:"build_id"`
	// CA is CACarries, CAPins or empty; CAHash the CA's hash.
	CA     string `json:"ca,omitempty"`
	CAHash string `json:"ca_hash,omitempty"`
	// NodePassword says the image sets /etc/rancher/node/password.
	NodePassword bool `json:"node_password,omitempty"`
	// ReportURL is where the node reports its first boot.
	ReportURL string `json:"report_url,omitempty"`
	// Hardware is the node's hardware profile, when the recipe declares one.
	Hardware *recipes.Hardware `json:"hardware,omitempty"`
}

// A node's part in a cluster CA pibake generated.
const (
	CACarries = "carries" // the founding server: installs the CA keys
	CAPins    = "pins"    // a joining node: its token pins the CA hash
)
