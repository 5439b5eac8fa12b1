// Package cluster is what follows from a whole recipe once every node is
// resolved: the founding server, the address and batch each node joins
// with, and the checks that involve more than one node (unique names and
// addresses, networks, sizing, logins), each finding at the place the
// recipe wrote.
package cluster

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/pibake/pibake/recipes/diag"
	"github.com/pibake/pibake/recipes/hclfuncs"
	"github.com/pibake/pibake/recipes/model"

	"github.com/hashicorp/hcl/v2"
)

// Where is where the recipe wrote what the findings cite; the loader
// fills it in as it resolves the blocks.
type Where struct {
	// Start is line 1 of the first file: the subject of findings that
	// belong to no particular block.
	Start         hcl.Range
	ClusterRanges diag.Ranges
	ClusterRange  hcl.Range
	// Meta runs parallel to Recipe.Nodes.
	Meta []diag.NodeMeta
}

// Resolve fills in what follows from the whole recipe, once every
// node is resolved: the founding server, the address nodes join, each
// node's join URL and batch. It reports only what makes that impossible.
func (ld *Where) Resolve(r *model.Recipe) hcl.Diagnostics {
	if len(r.Nodes) == 0 {
		return hcl.Diagnostics{diag.ErrorAt(&ld.Start, "No nodes",
			"A recipe needs at least one node block, such as:\n  node \"pi-server\" { role = \"server\" }")}
	}
	founding := slices.IndexFunc(r.Nodes, func(n model.Node) bool { return n.Role == model.RoleServer })
	if founding < 0 {
		return hcl.Diagnostics{diag.ErrorAt(&ld.Meta[0].DefRange, "No server",
			"A cluster needs at least one node with role = \"server\"; this recipe has only agents.")}
	}
	if r.Cluster.ServerAddress == "" && r.Nodes[founding].Address.IsValid() {
		r.Cluster.ServerAddress = r.Nodes[founding].Address.Addr().String()
	}
	switch api := r.Cluster.ServerAddress; {
	case api != "":
		r.Cluster.APIServer, _ = model.JoinURL(api)
	case len(r.Cluster.TLSSAN) > 0:
		r.Cluster.APIServer, _ = model.JoinURL(r.Cluster.TLSSAN[0])
	default:
		r.Cluster.APIServer, _ = model.JoinURL(r.Nodes[founding].Hostname + ".local")
	}
	assignReportURLs(r)
	return ld.assignJoins(r, founding, r.Servers())
}

// Validate checks what involves more than one node, on a resolved recipe;
// it changes nothing.
func (ld *Where) Validate(r *model.Recipe) hcl.Diagnostics {
	var diags hcl.Diagnostics
	diags = append(diags, ld.checkUnique(r)...)
	if ld.ClusterRanges.Has("server_ip") {
		diags = append(diags, ld.checkServerIP(r)...)
	}
	diags = append(diags, ld.checkJoinsItself(r)...)
	diags = append(diags, ld.checkNetworks(r)...)
	diags = append(diags, ld.checkSizing(r, r.Servers())...)
	diags = append(diags, ld.checkLogins(r)...)
	return diags
}

// checkLogins warns when nobody can log in to some nodes: they still boot
// and join, but nobody can look at one that does not. One warning, at
// the first such node block, names them all: a fleet of a thousand
// blocks gets one finding, not a thousand.
func (ld *Where) checkLogins(r *model.Recipe) hcl.Diagnostics {
	var blocks []string
	first, nodes := -1, 0
	seen := map[string]bool{}
	for i, n := range r.Nodes {
		if n.User.CanLogIn() {
			continue
		}
		nodes++
		if seen[n.Group] {
			continue
		}
		seen[n.Group] = true
		if first < 0 {
			first = i
		}
		blocks = append(blocks, fmt.Sprintf("%q", n.Group))
	}
	if first < 0 {
		return nil
	}
	n, m := r.Nodes[first], ld.Meta[first]
	which := fmt.Sprintf("Node %q", n.Hostname)
	switch {
	case len(blocks) > 1:
		which = fmt.Sprintf("%s of node blocks %s", model.Plural(nodes, "node"), listSome(blocks, 5))
	case nodes > 1 || n.Group != n.Hostname:
		which = fmt.Sprintf("%s of node block %s", model.Plural(nodes, "node"), blocks[0])
	}
	fix := "Add ssh_authorized_keys = ssh_public_keys() (your ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub) to a user block, in defaults for every node."
	if key, _ := hclfuncs.UserPublicKey(); key == "" {
		fix = "Give it a key: ssh_public_keys() finds none here (no ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub), so make one with ssh-keygen -t ed25519, or list keys in ssh_authorized_keys."
	}
	return hcl.Diagnostics{diag.WarningAt(m.Ranges.At("user", m.DefRange), "Nobody can log in",
		"%s: user %q has neither password_hash nor ssh_authorized_keys, so nobody can log in (the nodes still boot and join). %s",
		which, n.User.Name, fix)}
}

// listSome lists the first few items and says how many more there are.
func listSome(items []string, few int) string {
	if len(items) <= few {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:few], ", "), len(items)-few)
}

// checkServerIP refuses a server_ip that is an agent's static address:
// nodes would try to join a machine that serves no k3s API.
func (ld *Where) checkServerIP(r *model.Recipe) hcl.Diagnostics {
	for i, n := range r.Nodes {
		if n.Role == model.RoleAgent && n.Address.IsValid() && n.Address.Addr().String() == r.Cluster.ServerAddress {
			return hcl.Diagnostics{diag.ErrorAt(ld.ClusterRanges.At("server_ip", ld.ClusterRange), "Server address is an agent",
				"server_ip %s is the address of agent %s (%s); nodes join a server, and agents serve no k3s API. Use a server's address, or a load balancer or DNS name in front of the servers.",
				r.Cluster.ServerAddress, describe(n), ld.Meta[i].Ranges.At("ip", ld.Meta[i].DefRange))}
		}
	}
	return nil
}

// checkUnique rejects hostnames (case-insensitively) and addresses used by
// two nodes, citing both blocks and places, with advice that fits: count
// only comes up when one of the blocks has it.
func (ld *Where) checkUnique(r *model.Recipe) hcl.Diagnostics {
	var diags hcl.Diagnostics
	hosts := map[string]int{}
	addrs := map[netip.Addr]int{}
	counted := map[string]int{}
	for _, n := range r.Nodes {
		counted[n.Group]++
	}
	for i, n := range r.Nodes {
		m := ld.Meta[i]
		key := strings.ToLower(n.Hostname)
		if j, dup := hosts[key]; dup {
			fix := "Rename one of the node blocks, or set a hostname in one."
			if counted[n.Group] > 1 || counted[r.Nodes[j].Group] > 1 {
				fix = "A counted block names its nodes <label>-1, <label>-2, …: rename a block, or set hostname with count.index in it."
			}
			diags = append(diags, diag.ErrorAt(m.HostnameRange(), "Duplicate hostname",
				"Node %s has the hostname %q, which node %s (%s) already has. Every node needs its own hostname. %s",
				block(n, counted), n.Hostname, block(r.Nodes[j], counted), startOf(ld.Meta[j].HostnameRange()), fix))
		} else {
			hosts[key] = i
		}
		if !n.Address.IsValid() {
			continue
		}
		if j, dup := addrs[n.Address.Addr()]; dup {
			diags = append(diags, diag.ErrorAt(m.Ranges.At("ip", m.DefRange), "Duplicate IP address",
				"Node %s has the address %s, which %s (%s) already has. With count, use cidrhost(prefix, base + count.index).",
				describe(n), n.Address.Addr(), describe(r.Nodes[j]), ld.Meta[j].Ranges.At("ip", ld.Meta[j].DefRange)))
		} else {
			addrs[n.Address.Addr()] = i
		}
	}
	return diags
}

// describe names a node the way the recipe declares it.
func describe(n model.Node) string {
	return fmt.Sprintf("%q", n.Hostname)
}

// block names a node by its node block, and its count.index when the
// block makes several (counted: nodes per block label).
func block(n model.Node, counted map[string]int) string {
	if counted[n.Group] > 1 {
		return fmt.Sprintf("%q (node block %q, count.index %d)", n.Hostname, n.Group, n.Index)
	}
	return fmt.Sprintf("%q (node block %q)", n.Hostname, n.Group)
}

// startOf is a range's start as file:line:col.
func startOf(r *hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// assignJoins picks the founding server and the URL and batch every other
// node joins with.
func (ld *Where) assignJoins(r *model.Recipe, founding, servers int) hcl.Diagnostics {
	var diags hcl.Diagnostics
	clusterURL := ""
	if r.Cluster.ServerAddress != "" {
		clusterURL, _ = model.JoinURL(r.Cluster.ServerAddress)
	}
	agents := 0
	for i := range r.Nodes {
		n := &r.Nodes[i]
		m := ld.Meta[i]
		if n.Role == model.RoleAgent {
			n.JoinBatch = agents / r.Cluster.AgentJoinBatch
			agents++
		}
		if i == founding {
			// The first server founds the cluster; with more than one
			// server it starts embedded etcd for the others to join. A
			// single server keeps k3s's default SQLite store, which is
			// lighter on a Pi's storage.
			n.ClusterInit = servers > 1
			n.JoinURL = ""
			continue
		}
		if n.JoinURL == "" {
			n.JoinURL = clusterURL
		}
		if n.JoinURL == "" {
			diags = append(diags, diag.ErrorAt(&m.DefRange, "No server address to join",
				"Node %s (%s) must join the cluster, but no server address is known: the first server %s uses DHCP. Give that server a static ip, set cluster.server_ip, or set server in this node.",
				describe(*n), n.Role, describe(r.Nodes[founding])))
			continue
		}
	}
	return diags
}

// assignReportURLs gives every node without a report block of its own the
// cluster's report URL.
func assignReportURLs(r *model.Recipe) {
	for i := range r.Nodes {
		if r.Nodes[i].ReportURL == "" {
			r.Nodes[i].ReportURL = r.Cluster.ReportURL
		}
	}
}

// checkJoinsItself refuses a node whose join address is its own.
func (ld *Where) checkJoinsItself(r *model.Recipe) hcl.Diagnostics {
	var diags hcl.Diagnostics
	founding := slices.IndexFunc(r.Nodes, func(n model.Node) bool { return n.Role == model.RoleServer })
	if founding < 0 {
		return nil // "No server" says it
	}
	for i, n := range r.Nodes {
		if n.JoinURL != "" && n.Address.IsValid() && n.JoinURL == fmt.Sprintf("https://%s:%d", n.Address.Addr(), model.APIPort) {
			m := ld.Meta[i]
			diags = append(diags, diag.ErrorAt(m.Ranges.At("server", m.DefRange), "Node joins itself",
				"Node %s would join %s, which is its own address. Point it at the founding server %s.", describe(n), n.JoinURL, describe(r.Nodes[founding])))
		}
	}
	return diags
}

// checkNetworks rejects pod and service networks that overlap each other or
// a node's network, and a pod network too small for one /24 per node.
func (ld *Where) checkNetworks(r *model.Recipe) hcl.Diagnostics {
	var diags hcl.Diagnostics
	c := r.Cluster
	cr := ld.ClusterRanges
	if !c.ClusterCIDR.IsValid() || !c.ServiceCIDR.IsValid() {
		return nil // already reported
	}
	if c.ClusterCIDR.Overlaps(c.ServiceCIDR) {
		diags = append(diags, diag.ErrorAt(cr.At("service_cidr", cr.FirstOf(ld.ClusterRange, "cluster_cidr")), "Overlapping cluster networks",
			"service_cidr %s overlaps cluster_cidr %s; pods and services need separate ranges (the defaults are %s and %s).",
			c.ServiceCIDR, c.ClusterCIDR, model.DefaultClusterCIDR, model.DefaultServiceCIDR))
	}
	reported := map[string]bool{}
	for i, n := range r.Nodes {
		if !n.Address.IsValid() {
			continue
		}
		network := n.Address.Masked()
		for _, p := range []struct {
			name   string
			prefix netip.Prefix
		}{{name: "cluster_cidr", prefix: c.ClusterCIDR}, {name: "service_cidr", prefix: c.ServiceCIDR}} {
			key := p.name + network.String()
			if !p.prefix.Overlaps(network) || reported[key] {
				continue
			}
			reported[key] = true
			subject := ld.Meta[i].Ranges.At("ip", ld.Meta[i].DefRange)
			if cr.Has(p.name) {
				subject = cr.At(p.name, ld.ClusterRange)
			}
			diags = append(diags, diag.ErrorAt(subject, "Cluster network overlaps the node network",
				"%s %s overlaps %s, the network of node %s (ip %s): pods or services would shadow real hosts. Set cluster.%s to a range your LAN does not use.",
				p.name, p.prefix, network, describe(n), n.Address, p.name))
		}
	}

	// k3s gives every node, servers included, a /24 of cluster_cidr.
	capacity := 0
	if b := c.ClusterCIDR.Bits(); b <= 24 {
		capacity = 1 << (24 - b)
	}
	if len(r.Nodes) > capacity {
		want := 24
		for want > 0 && 1<<(24-want) < len(r.Nodes) {
			want--
		}
		subject := cr.At("cluster_cidr", ld.ClusterRange)
		if !cr.Has("cluster_cidr") && ld.ClusterRange == ld.Start {
			subject = &ld.Meta[0].DefRange
		}
		diags = append(diags, diag.ErrorAt(subject, "Cluster network too small",
			"k3s gives every node, servers included, a /24 of cluster_cidr: %s has %d of them, but the recipe has %d nodes. Widen cluster_cidr to a /%d (for example %s).",
			c.ClusterCIDR, capacity, len(r.Nodes), want, netip.PrefixFrom(c.ClusterCIDR.Addr(), want).Masked()))
	}
	return diags
}

// serverTiers is k3s's server sizing guide (docs/installation/requirements):
// how many agents one server of this size carries.
var serverTiers = []struct {
	cpus, memoryGB, agents int
}{
	{cpus: 16, memoryGB: 32, agents: math.MaxInt},
	{cpus: 8, memoryGB: 16, agents: 1800},
	{cpus: 4, memoryGB: 8, agents: 900},
	{cpus: 2, memoryGB: 4, agents: 350},
}

// checkSizing warns about clusters that will work poorly: an even etcd
// quorum, etcd on SD cards, too many agents for the servers, big join waves.
func (ld *Where) checkSizing(r *model.Recipe, servers int) hcl.Diagnostics {
	var diags hcl.Diagnostics
	var smallest *model.Hardware
	var smallestAt *hcl.Range
	lastServer := -1
	for i, n := range r.Nodes {
		if n.Role != model.RoleServer {
			continue
		}
		lastServer = i
		m := ld.Meta[i]
		if n.Storage == model.StorageSD {
			diags = append(diags, diag.WarningAt(m.Ranges.At("storage", *m.Ranges.At("hardware.boot_device", m.DefRange)), "Server on an SD card",
				"Server %s stores the cluster datastore on an SD card. etcd and SQLite write constantly; SD cards wear out and stall under that load. Boot servers from an SSD.", describe(n)))
		}
		h := n.Hardware
		if h.CPUs > 0 && h.MemoryGB > 0 && (smallest == nil || h.CPUs < smallest.CPUs || h.MemoryGB < smallest.MemoryGB) {
			smallest = &r.Nodes[i].Hardware
			smallestAt = m.Ranges.At("hardware", m.DefRange)
		}
	}
	if servers >= 2 && servers%2 == 0 {
		m := ld.Meta[lastServer]
		diags = append(diags, diag.WarningAt(&m.DefRange, "Even number of servers",
			"The recipe has %d servers. etcd needs a majority to work, so %d servers tolerate no more failures than %d; use an odd number (3 or 5).", servers, servers, servers-1))
	}
	agents := r.Agents()
	if smallest != nil && agents > 0 {
		capacity := serverTiers[len(serverTiers)-1].agents
		for _, t := range serverTiers {
			if smallest.CPUs >= t.cpus && smallest.MemoryGB >= t.memoryGB {
				capacity = t.agents
				break
			}
		}
		if servers >= 3 && capacity != math.MaxInt {
			capacity += capacity / 2 // the guide: three HA servers carry about 50% more
		}
		if agents > capacity {
			diags = append(diags, diag.WarningAt(smallestAt, "Servers too small for the agents",
				"The recipe has %d agents, but per k3s's sizing guide %d server(s) with %d CPUs and %d GB carry about %d. Give the servers more CPU and memory or add servers.",
				agents, servers, smallest.CPUs, smallest.MemoryGB, capacity))
		}
	}
	if batch := r.Cluster.AgentJoinBatch; agents > batch {
		subject := ld.ClusterRanges.At("agent_join_batch", ld.ClusterRange)
		if !ld.ClusterRanges.Has("agent_join_batch") && ld.ClusterRange == ld.Start {
			subject = &ld.Meta[0].DefRange
		}
		batches := (agents + batch - 1) / batch
		diags = append(diags, diag.WarningAt(subject, "Agents join in batches",
			"%d agents join in %d batches of at most %d: once the server answers, the agents of batch n wait n × %d s before installing k3s (the last batch %d s), so the servers take each join wave in turn.", agents, batches, batch, model.BatchDelaySeconds, (batches-1)*model.BatchDelaySeconds))
	}
	return diags
}
