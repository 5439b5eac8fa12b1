package recipes

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/pibake/pibake/recipes/hardware"
)

// The gohcl struct tags below are the recipe schema. gohcl reports unknown
// blocks and attributes itself, with "Did you mean …?" suggestions.

// fileSpec is the top level of a recipe. Block bodies are decoded in a
// second step, because node bodies are evaluated once per count.index.
type fileSpec struct {
	Image    *rawBlock `hcl:"image,block"`
	Cluster  *rawBlock `hcl:"cluster,block"`
	Defaults *rawBlock `hcl:"defaults,block"`
	Nodes    []rawNode `hcl:"node,block"`
	Output   *rawBlock `hcl:"output,block"`
}

type rawBlock struct {
	Body     hcl.Body  `hcl:",remain"`
	DefRange hcl.Range `hcl:",def_range"`
}

type rawNode struct {
	Name      string    `hcl:"name,label"`
	Body      hcl.Body  `hcl:",remain"`
	NameRange hcl.Range `hcl:"name,label_range"`
	DefRange  hcl.Range `hcl:",def_range"`
}

type imageSpec struct {
	Source string `hcl:"source,optional"`
	SHA256 string `hcl:"sha256,optional"`
}

type clusterSpec struct {
	Name             string      `hcl:"name,optional"`
	Token            string      `hcl:"token,optional"`
	AgentToken       string      `hcl:"agent_token,optional"`
	K3sVersion       string      `hcl:"k3s_version,optional"`
	K3sChannel       string      `hcl:"k3s_channel,optional"`
	ServerIP         string      `hcl:"server_ip,optional"`
	FlannelBackend   string      `hcl:"flannel_backend,optional"`
	ClusterCIDR      string      `hcl:"cluster_cidr,optional"`
	ServiceCIDR      string      `hcl:"service_cidr,optional"`
	TLSSAN           []string    `hcl:"tls_san,optional"`
	InstallScriptURL string      `hcl:"install_script_url,optional"`
	AgentJoinBatch   *int        `hcl:"agent_join_batch,optional"`
	CA               string      `hcl:"ca,optional"`
	Airgap           *airgapSpec `hcl:"airgap,block"`
	Report           *reportSpec `hcl:"report,block"`
}

type reportSpec struct {
	URL string `hcl:"url"`
}

type airgapSpec struct {
	K3sBinary     string `hcl:"k3s_binary"`
	Images        string `hcl:"images,optional"`
	InstallScript string `hcl:"install_script"`
}

type outputSpec struct {
	Dir      string `hcl:"dir,optional"`
	Compress bool   `hcl:"compress,optional"`
}

// nodeSpec is a node block or the defaults block. Which attributes were
// actually written is tracked separately (see diag.Ranges), so that a node
// overrides defaults only where it says something.
type nodeSpec struct {
	Role      string            `hcl:"role,optional"`
	Count     hcl.Expression    `hcl:"count,optional"` // evaluated before the rest
	Hostname  string            `hcl:"hostname,optional"`
	IP        string            `hcl:"ip,optional"`
	Gateway   string            `hcl:"gateway,optional"`
	DNS       []string          `hcl:"dns,optional"`
	Server    string            `hcl:"server,optional"`
	Labels    map[string]string `hcl:"labels,optional"`
	Taints    []string          `hcl:"taints,optional"`
	K3sArgs   []string          `hcl:"k3s_args,optional"`
	SSH       bool              `hcl:"ssh,optional"`
	Timezone  string            `hcl:"timezone,optional"`
	Storage   string            `hcl:"storage,optional"`
	Hardware  *hardware.Spec    `hcl:"hardware,block"`
	User      *userSpec         `hcl:"user,block"`
	Apt       *aptSpec          `hcl:"apt,block"`
	WiFi      *wifiSpec         `hcl:"wifi,block"`
	Firstboot *firstbootSpec    `hcl:"firstboot,block"`
	Report    *reportSpec       `hcl:"report,block"`
}

type userSpec struct {
	Name              string   `hcl:"name,optional"`
	PasswordHash      string   `hcl:"password_hash,optional"`
	SSHAuthorizedKeys []string `hcl:"ssh_authorized_keys,optional"`
	PasswordlessSudo  *bool    `hcl:"passwordless_sudo,optional"`
}

type aptSpec struct {
	Upgrade      bool     `hcl:"upgrade,optional"`
	Packages     []string `hcl:"packages,optional"`
	ModulesExtra bool     `hcl:"modules_extra,optional"`
}

type wifiSpec struct {
	SSID    string `hcl:"ssid,optional"`
	PSK     string `hcl:"psk,optional"`
	Country string `hcl:"country,optional"`
}

type firstbootSpec struct {
	Method string `hcl:"method,optional"`
}
