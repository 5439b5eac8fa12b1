package inputs

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/pibake/pibake/builder/identity"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/internal/report"
	"github.com/pibake/pibake/recipes"
)

// SettleIdentity settles the cluster's identity in the output directory,
// under its lock: the directory must not hold another cluster's images
// (then Options.Check runs); the token is the recipe's or the one kept
// there; then the CA (and the admin kubeconfig), the node password
// generations and the report key.
func (s *Session) SettleIdentity(d *outdir.Dir) error {
	if c := d.Manifest().Cluster; c != "" && c != s.R.Cluster.Name && !s.Opt.NewCluster {
		return fmt.Errorf("%w: %s holds the images of cluster %q, and this recipe builds cluster %q; use another --out, or --new-cluster to replace them", outdir.ErrNewCluster, s.OutDir, c, s.R.Cluster.Name)
	}
	if s.Opt.Check != nil {
		if err := s.Opt.Check(d); err != nil {
			return err
		}
	}
	var err error
	if s.Token, s.TokenSource, err = d.Token(s.R.Cluster.Token.Reveal(), s.Opt.NewCluster); err != nil {
		return err
	}
	// The CA first: a CA refused (a new cluster not asked for) must not
	// leave a --rotate-node-password recorded for a run that never built.
	now := time.Now()
	if s.CA, err = d.ClusterCA(s.R.Cluster.CA, s.Opt.NewCluster, now); err != nil {
		return err
	}
	if s.CA != nil {
		if err := d.WriteKubeconfig(s.CA, s.R.Cluster.Name, s.R.Cluster.APIServer, now); err != nil {
			return err
		}
	}
	if s.PasswordGens, err = d.NodePasswordGens(s.Opt.RotateNodePassword, s.Opt.NewCluster); err != nil {
		return err
	}
	// Last: nothing refused after it, so a new key is never kept for a
	// run that does not happen.
	s.ReportKey, err = d.ReportKey(reports(s.R), s.Opt.NewCluster)
	return err
}

// RecordIdentity notes in the manifest where the token comes from and
// which CA the nodes pin.
func (s *Session) RecordIdentity(m *outdir.Manifest) {
	m.CAHash = ""
	if s.CA != nil {
		m.CAHash = s.CA.Hash()
	}
	m.Token, m.TokenID = s.TokenSource, ""
	if s.TokenSource == outdir.TokenGenerated {
		m.TokenID = outdir.TokenID(s.Token)
	}
}

// RecordRun notes in the manifest what the run was made from: pibake's
// version, the cluster, the recipe's hash and hostnames, and the identity.
func (s *Session) RecordRun(m *outdir.Manifest) {
	m.PibakeVersion, m.Cluster, m.RecipeHash = s.Opt.Version, s.R.Cluster.Name, s.RecipeHash()
	m.RecipeNodes = make([]string, 0, len(s.R.Nodes))
	for _, n := range s.R.Nodes {
		m.RecipeNodes = append(m.RecipeNodes, n.Hostname)
	}
	s.RecordIdentity(m)
}

// nodeIdentity is what a node's payload gets from the cluster identity:
// the token it joins with, the CA files (the founding server only) and its
// password.
func (s *Session) nodeIdentity(n *recipes.Node, opt *firstboot.Options) {
	opt.NodePassword = identity.NodePassword(s.Token, s.R.Cluster.Name, n.Hostname, s.PasswordGens[n.Hostname])
	if s.CA == nil {
		return
	}
	opt.CAHash = s.CA.Hash()
	if n.JoinURL == "" {
		opt.CAFiles = map[string][]byte{}
		for _, name := range identity.K3sFiles() {
			opt.CAFiles[name] = s.CA.File(name)
		}
		return
	}
	// Joiners carry the token k3s writes into its own token files: a
	// server joins as "server"; an agent as "node" with the agent token,
	// or "server" without one, as node-token holds.
	user, secret := identity.ServerUser, s.Token
	if n.Role == recipes.RoleAgent {
		if at := s.R.Cluster.AgentToken.Reveal(); at != "" {
			user, secret = identity.AgentUser, at
		}
	}
	opt.JoinToken = identity.Token(s.CA.Hash(), user, secret)
}

// nodeReportKey is the key node n's image signs its reports with, in hex;
// empty when it does not report.
func (s *Session) nodeReportKey(n *recipes.Node, buildID string) string {
	if n.ReportURL == "" || s.ReportKey == nil {
		return ""
	}
	return hex.EncodeToString(report.NodeKey(s.ReportKey, n.Hostname, buildID))
}
