package recipes

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/pibake/pibake/recipes/diag"
	"github.com/pibake/pibake/recipes/hclfuncs"
	"github.com/pibake/pibake/recipes/lockfile"
	"github.com/pibake/pibake/recipes/model"

	"github.com/hashicorp/hcl/v2"
)

// Defaults for settings a recipe may leave out (recipes/model).
const (
	DefaultK3sChannel       = model.DefaultK3sChannel
	DefaultFlannelBackend   = model.DefaultFlannelBackend
	DefaultClusterCIDR      = model.DefaultClusterCIDR
	DefaultServiceCIDR      = model.DefaultServiceCIDR
	DefaultInstallScriptURL = model.DefaultInstallScriptURL
	DefaultAgentJoinBatch   = model.DefaultAgentJoinBatch
	// APIPort is the port k3s servers listen on for joining nodes.
	APIPort = model.APIPort
	// BatchDelaySeconds is how long each agent join batch waits after the
	// one before.
	BatchDelaySeconds = model.BatchDelaySeconds
)

var (
	k3sChannelPattern = regexp.MustCompile(`^(stable|latest|testing|v[0-9]+\.[0-9]+)$`)
	// k3s parses "K10…" as a full (CA-pinned) token and "abcdef.0123456789abcdef"
	// as a bootstrap token; a shared secret must look like neither.
	bootstrapTokenPattern = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	hostnamePattern       = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// userconf-pi's userconf-service accepts 1 to 32 characters matching
	// ^[a-z][a-z0-9-]*$ and not root; anything else makes the OS rename
	// userconf.txt to failed_userconf.txt and wait at an interactive dialog
	// (userconf-pi, branch bookworm, userconf-service: validate_user).
	userNamePattern   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	cryptHashPattern  = regexp.MustCompile(`^\$(5|6|y|gy|7|2a|2b|2y)\$[./0-9A-Za-z$=,-]+$`)
	sshKeyPattern     = regexp.MustCompile(`^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)(-cert-v01@openssh\.com)? [A-Za-z0-9+/=]+( .*)?$`)
	timezonePattern   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$`)
	countryPattern    = regexp.MustCompile(`^[A-Za-z]{2}$`)
	hexPSKPattern     = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	packagePattern    = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$`)
	taintPattern      = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?(=[A-Za-z0-9._-]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$`)
	labelKeyPattern   = regexp.MustCompile(`^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	labelValuePattern = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)
)

var flannelBackends = []string{"vxlan", "wireguard-native", "host-gw", "none"}

func resolveImage(spec imageSpec, ranges diag.Ranges, fallback hcl.Range, dir string, img *Image) hcl.Diagnostics {
	var diags hcl.Diagnostics
	img.Source = spec.Source
	if img.Source == "" {
		img.Source = DefaultImageSource
	}
	switch {
	case img.Source == DefaultImageSource:
	case strings.HasPrefix(img.Source, "https://"), strings.HasPrefix(img.Source, "http://"), strings.HasPrefix(img.Source, "file://"):
		if u, err := url.Parse(img.Source); err != nil || (u.Scheme != "file" && u.Host == "") {
			diags = append(diags, diag.ErrorAt(ranges.At("source", fallback), "Invalid image source",
				"%q is not a usable URL. Give an https:// URL of a .img.xz or .img file.", img.Source))
		}
	case strings.Contains(img.Source, "://"), strings.Contains(img.Source, ":") && !strings.ContainsAny(img.Source, `/\.`):
		diags = append(diags, diag.ErrorAt(ranges.At("source", fallback), "Invalid image source",
			"%q is neither %q, an http(s):// or file:// URL, nor a local .img or .img.xz path.", img.Source, DefaultImageSource))
	default:
		if !strings.HasSuffix(img.Source, ".img") && !strings.HasSuffix(img.Source, ".img.xz") {
			diags = append(diags, diag.ErrorAt(ranges.At("source", fallback), "Invalid image source",
				"A local image must be a .img or .img.xz file; %q is neither.", img.Source))
			break
		}
		p, err := hclfuncs.ResolvePath(dir, img.Source)
		if err != nil {
			diags = append(diags, diag.ErrorAt(ranges.At("source", fallback), "Invalid image source", "%s.", err))
			break
		}
		img.Source = p
	}
	if spec.SHA256 != "" {
		if !lockfile.SHA256Pattern.MatchString(spec.SHA256) {
			diags = append(diags, diag.ErrorAt(ranges.At("sha256", fallback), "Invalid sha256",
				"sha256 must be 64 hexadecimal digits, as printed by sha256sum; this is %d characters.", len(spec.SHA256)))
		}
		img.SHA256 = strings.ToLower(spec.SHA256)
	}
	return diags
}

func resolveCluster(spec clusterSpec, ranges diag.Ranges, fallback hcl.Range, defaultName, dir string, c *Cluster) hcl.Diagnostics {
	at := func(name string) *hcl.Range { return ranges.At(name, fallback) }
	var diags hcl.Diagnostics
	diags = append(diags, resolveClusterName(spec, ranges, at, defaultName, c)...)
	diags = append(diags, resolveTokens(spec, ranges, at, c)...)
	diags = append(diags, resolveK3s(spec, at, c)...)
	diags = append(diags, resolveClusterNetwork(spec, at, c)...)
	diags = append(diags, resolveAirgap(spec.Airgap, ranges, fallback, dir, c)...)
	if spec.Report != nil {
		c.ReportURL = spec.Report.URL
		diags = append(diags, checkReportURL(c.ReportURL, at("report.url"))...)
	}
	return diags
}

// checkReportURL refuses a report URL nodes could not post to. It is no
// secret (node.env on the boot partition holds it), so it must not carry
// credentials: reports are signed instead.
func checkReportURL(raw string, subject *hcl.Range) hcl.Diagnostics {
	u, err := url.Parse(raw)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "":
		return hcl.Diagnostics{diag.ErrorAt(subject, "Invalid report URL",
			"report url %q must be an http:// or https:// URL with a host, such as \"http://192.168.1.5:8470\" (where pibake watch listens).", raw)}
	case u.User != nil:
		return hcl.Diagnostics{diag.ErrorAt(subject, "Invalid report URL",
			"report url %q carries credentials, which every card would show in plain text; remove them: reports are signed with a key of the build.", u.Redacted())}
	case u.RawQuery != "" || u.Fragment != "":
		return hcl.Diagnostics{diag.ErrorAt(subject, "Invalid report URL",
			"report url %q has a query or fragment; give the base URL only (reports go to <url>/v1/report).", raw)}
	case isLoopback(u.Hostname()):
		// A warning, not an error: a node run on this machine (a VM, the
		// tests' stand-ins) does reach it; a card never does.
		return hcl.Diagnostics{diag.WarningAt(subject, "Report URL is the node itself",
			"report url %q names whatever machine uses it: on a card, every node would report to itself and pibake watch would hear nothing. Give the address of the machine that runs pibake watch, as the nodes reach it, such as \"http://192.168.1.5:8470\".", raw)}
	}
	return nil
}

// isLoopback says whether host is "this machine" wherever it is used:
// localhost (and *.localhost, RFC 6761), 127.0.0.0/8, ::1, 0.0.0.0, ::.
func isLoopback(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && (a.Unmap().IsLoopback() || a.IsUnspecified())
}

func resolveClusterName(spec clusterSpec, ranges diag.Ranges, at func(string) *hcl.Range, defaultName string, c *Cluster) hcl.Diagnostics {
	c.Name = spec.Name
	if c.Name == "" {
		c.Name = defaultName
	}
	if hostnamePattern.MatchString(c.Name) {
		return nil
	}
	if !ranges.Has("name") {
		// The file name is not the user's fault: fall back quietly.
		c.Name = "k3s"
		return nil
	}
	return hcl.Diagnostics{diag.ErrorAt(at("name"), "Invalid cluster name",
		"The cluster name %q must be lowercase letters, digits and hyphens (at most 63), starting and ending with a letter or digit.", c.Name)}
}

func resolveTokens(spec clusterSpec, ranges diag.Ranges, at func(string) *hcl.Range, c *Cluster) hcl.Diagnostics {
	var diags hcl.Diagnostics
	// Tokens read with file() end in a newline; surrounding white space is
	// never part of a token.
	c.Token = Secret(strings.TrimSpace(spec.Token))
	c.AgentToken = Secret(strings.TrimSpace(spec.AgentToken))
	if ranges.Has("token") {
		diags = append(diags, checkToken("token", spec.Token, at("token"))...)
	}
	if ranges.Has("agent_token") {
		diags = append(diags, checkToken("agent_token", spec.AgentToken, at("agent_token"))...)
		if c.AgentToken != "" && c.AgentToken == c.Token {
			diags = append(diags, diag.ErrorAt(at("agent_token"), "Agent token equals token",
				"agent_token exists so that agent images cannot join servers; it must differ from token."))
		}
	}
	return diags
}

// resolveK3s: the release, the install script and the join batches.
func resolveK3s(spec clusterSpec, at func(string) *hcl.Range, c *Cluster) hcl.Diagnostics {
	var diags hcl.Diagnostics
	switch {
	case spec.K3sVersion != "" && spec.K3sChannel != "":
		diags = append(diags, diag.ErrorAt(at("k3s_channel"), "Both k3s_version and k3s_channel set",
			"Give either a pinned k3s_version (reproducible) or a k3s_channel (follows releases), not both."))
	case spec.K3sVersion != "":
		if !lockfile.K3sVersionPattern.MatchString(spec.K3sVersion) {
			diags = append(diags, diag.ErrorAt(at("k3s_version"), "Invalid k3s version",
				"%q is not a k3s release name; they look like \"v1.31.4+k3s1\" (see https://github.com/k3s-io/k3s/releases).", spec.K3sVersion))
		}
		c.K3sVersion = spec.K3sVersion
	case spec.K3sChannel != "":
		if !k3sChannelPattern.MatchString(spec.K3sChannel) {
			diags = append(diags, diag.ErrorAt(at("k3s_channel"), "Invalid k3s channel",
				"%q is not a k3s channel; use \"stable\", \"latest\", \"testing\" or a minor version such as \"v1.31\".", spec.K3sChannel))
		}
		c.K3sChannel = spec.K3sChannel
	default:
		c.K3sChannel = DefaultK3sChannel
	}

	c.InstallScriptURL = spec.InstallScriptURL
	if c.InstallScriptURL == "" {
		c.InstallScriptURL = DefaultInstallScriptURL
	}
	if u, err := url.Parse(c.InstallScriptURL); err != nil || u.Scheme != "https" || u.Host == "" {
		diags = append(diags, diag.ErrorAt(at("install_script_url"), "Invalid install script URL",
			"install_script_url %q must be an https:// URL: the script runs as root on every node.", c.InstallScriptURL))
	}

	c.AgentJoinBatch = DefaultAgentJoinBatch
	if spec.AgentJoinBatch != nil {
		c.AgentJoinBatch = *spec.AgentJoinBatch
		if c.AgentJoinBatch < 1 {
			diags = append(diags, diag.ErrorAt(at("agent_join_batch"), "Invalid agent join batch",
				"agent_join_batch is %d; it must be at least 1 (k3s recommends batches of 50 or fewer).", c.AgentJoinBatch))
		}
	}
	return diags
}

// resolveClusterNetwork: where nodes join, flannel, the pod and service
// networks, the TLS names.
func resolveClusterNetwork(spec clusterSpec, at func(string) *hcl.Range, c *Cluster) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if spec.ServerIP != "" {
		if !model.ValidHost(spec.ServerIP) {
			diags = append(diags, diag.ErrorAt(at("server_ip"), "Invalid server address",
				"server_ip %q must be an IP address or a DNS name (no scheme, no port), such as \"192.168.1.10\".", spec.ServerIP))
		}
		c.ServerAddress = spec.ServerIP
	}

	c.FlannelBackend = spec.FlannelBackend
	if c.FlannelBackend == "" {
		c.FlannelBackend = DefaultFlannelBackend
	}
	if !slices.Contains(flannelBackends, c.FlannelBackend) {
		diags = append(diags, diag.ErrorAt(at("flannel_backend"), "Invalid flannel backend",
			"flannel_backend %q is not one k3s supports; use one of %s.", c.FlannelBackend, diag.QuoteList(flannelBackends)))
	}

	var d hcl.Diagnostics
	c.ClusterCIDR, d = parseCIDR("cluster_cidr", spec.ClusterCIDR, DefaultClusterCIDR, at("cluster_cidr"))
	diags = append(diags, d...)
	c.ServiceCIDR, d = parseCIDR("service_cidr", spec.ServiceCIDR, DefaultServiceCIDR, at("service_cidr"))
	diags = append(diags, d...)

	for _, san := range spec.TLSSAN {
		if !model.ValidHost(san) {
			diags = append(diags, diag.ErrorAt(at("tls_san"), "Invalid tls_san entry",
				"%q is neither an IP address nor a DNS name.", san))
		}
	}
	c.TLSSAN = spec.TLSSAN

	c.CA = CAMode(spec.CA)
	if c.CA == "" {
		c.CA = CANone
	}
	if !slices.Contains(CAModes, c.CA) {
		diags = append(diags, diag.ErrorAt(at("ca"), "Invalid ca",
			"ca %q is not one pibake knows; use \"generate\" (pibake makes the cluster's CAs, pins them in every joining node's token and writes an admin kubeconfig) or \"none\" (k3s makes them at first start; the default).", spec.CA))
	}
	return diags
}

func resolveAirgap(a *airgapSpec, ranges diag.Ranges, fallback hcl.Range, dir string, c *Cluster) hcl.Diagnostics {
	if a == nil {
		return nil
	}
	var diags hcl.Diagnostics
	c.Airgap = &Airgap{}
	for _, f := range []struct {
		name string
		val  string
		dst  *string
	}{
		{name: "k3s_binary", val: a.K3sBinary, dst: &c.Airgap.K3sBinary},
		{name: "images", val: a.Images, dst: &c.Airgap.Images},
		{name: "install_script", val: a.InstallScript, dst: &c.Airgap.InstallScript},
	} {
		if f.val == "" {
			continue
		}
		p, err := hclfuncs.ResolvePath(dir, f.val)
		if err == nil {
			_, err = os.Stat(p)
		}
		if err != nil {
			diags = append(diags, diag.ErrorAt(ranges.At("airgap."+f.name, fallback), "Air-gap file not found",
				"airgap.%s: %s. Download it from https://github.com/k3s-io/k3s/releases and give its path.", f.name, err))
			continue
		}
		*f.dst = p
	}
	return diags
}

func checkToken(name, raw string, subject *hcl.Range) hcl.Diagnostics {
	problem := tokenProblem(strings.TrimSpace(raw))
	if problem == "" {
		return nil
	}
	// The detail never quotes the token: diagnostics reach logs.
	return hcl.Diagnostics{diag.ErrorAt(subject, "Invalid "+strings.ReplaceAll(name, "_", " "), "The %s %s.", name, problem)}
}

// CheckToken checks a cluster token by the rules a recipe's token follows
// (a generated token kept on disk is checked by them too); the error never
// quotes the token.
func CheckToken(tok string) error {
	if problem := tokenProblem(tok); problem != "" {
		return fmt.Errorf("the token %s", problem)
	}
	return nil
}

// tokenProblem says what is wrong with a token k3s would not take as a
// plain shared secret, or "".
func tokenProblem(tok string) string {
	switch {
	case len(tok) < 16:
		return fmt.Sprintf("is %d characters long; use at least 16 (for example: openssl rand -hex 32)", len(tok))
	case strings.ContainsAny(tok, " \t\r\n"):
		return "contains white space, which the k3s config file and install environment would split"
	case strings.HasPrefix(tok, "K10"):
		return "starts with K10, which k3s reads as a secure token carrying a CA hash; use a plain random secret"
	case bootstrapTokenPattern.MatchString(tok):
		return "has the shape of a bootstrap token (abcdef.0123456789abcdef), which k3s parses differently; use a plain random secret"
	}
	return ""
}

func parseCIDR(name, raw, def string, subject *hcl.Range) (netip.Prefix, hcl.Diagnostics) {
	if raw == "" {
		raw = def
	}
	p, err := netip.ParsePrefix(raw)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, hcl.Diagnostics{diag.ErrorAt(subject, "Invalid "+strings.ReplaceAll(name, "_", " "),
			"%s %q must be an IPv4 network in CIDR notation, such as %q.", name, raw, def)}
	}
	if p.Masked() != p {
		return netip.Prefix{}, hcl.Diagnostics{diag.ErrorAt(subject, "Invalid "+strings.ReplaceAll(name, "_", " "),
			"%s %q has host bits set; did you mean %q?", name, raw, p.Masked().String())}
	}
	return p, nil
}
