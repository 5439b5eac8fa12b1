package inputs

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/firstboot"
	"github.com/pibake/pibake/recipes"
)

// Method is how node n's payload is activated on the base.
func (s *Session) Method(n *recipes.Node) (recipes.Method, error) {
	return firstboot.ChooseMethod(n.Firstboot.Method, s.Base.FirstbootBase())
}

// Inputs hashes everything node n's image is made from, once, from
// canonical inputs: pibake's version and fixed scripts, the base image and
// the one timestamp every write gets, the cluster and the node as resolved
// (secrets included, only ever hashed, keyed by a key stretched from
// them: keys.go), the token and the air-gap files' contents. Its build id
// (outdir.BuildID) names the node's cloud-init instance; an unchanged
// hash with an intact image means the node need not be built again.
func (s *Session) Inputs(n recipes.Node) (string, error) {
	method, err := s.Method(&n)
	if err != nil {
		return "", err
	}
	c := s.R.Cluster
	c.Airgap = nil // its files count by content, below, not by where they are
	h := keyedHash(s.nodeKey(n))
	fmt.Fprintf(h, "pibake %s\nscripts %s\nbase %s\nstamp %d\nmethod %s\n", s.Opt.Version, firstboot.Fingerprint(), s.Base.Image.SHA256, s.Base.Stamp.Unix(), method)
	enc := json.NewEncoder(h)
	enc.Encode(c)
	enc.Encode(n)
	fmt.Fprintf(h, "token %q\nagent-token %q\n", s.Token, c.AgentToken.Reveal())
	id := s.payloadOptions(&n, "")
	fmt.Fprintf(h, "join-token %q\nca %s\nnode-password %q\n", id.JoinToken, id.CAHash, id.NodePassword)
	for _, name := range slices.Sorted(maps.Keys(id.CAFiles)) {
		fmt.Fprintf(h, "ca-file %s %x\n", name, sha256.Sum256(id.CAFiles[name]))
	}
	if n.User != nil {
		fmt.Fprintf(h, "password %q\n", n.User.PasswordHash.Reveal())
	}
	if n.WiFi != nil {
		fmt.Fprintf(h, "psk %q\n", n.WiFi.PSK.Reveal())
	}
	if n.ReportURL != "" {
		fmt.Fprintf(h, "report-key %x\n", sha256.Sum256(s.ReportKey))
	}
	for _, p := range []string{"k3s", "images", "install"} {
		var path string
		if a := s.R.Cluster.Airgap; a != nil {
			path = map[string]string{"k3s": a.K3sBinary, "images": a.Images, "install": a.InstallScript}[p]
		}
		fmt.Fprintf(h, "airgap %s %s %s\n", p, filepath.Base(path), s.Base.Airgap[path])
	}
	return hexSum(h), nil
}

// Payload is node n's payload, for inputs (n's inputs hash): what build
// writes to the node's image and flash to its device, one code path.
func (s *Session) Payload(n *recipes.Node, inputs string) (firstboot.Payload, error) {
	return firstboot.Render(&s.R.Cluster, n, s.payloadOptions(n, outdir.BuildID(inputs)))
}

// CAPart is node n's part in the generated CA: firstboot.CACarries,
// firstboot.CAPins or "".
func (s *Session) CAPart(n *recipes.Node) string {
	switch opt := s.payloadOptions(n, ""); {
	case len(opt.CAFiles) > 0:
		return firstboot.CACarries
	case opt.CAHash != "":
		return firstboot.CAPins
	}
	return ""
}

// payloadOptions are the inputs of node n's payload that are not in the
// recipe.
func (s *Session) payloadOptions(n *recipes.Node, buildID string) firstboot.Options {
	opt := firstboot.Options{Token: s.Token, BuildID: buildID, Base: s.Base.FirstbootBase()}
	s.nodeIdentity(n, &opt)
	if buildID != "" {
		opt.ReportKey = s.nodeReportKey(n, buildID)
	}
	return opt
}

// Edit is the boot partition edit that writes a payload, every entry
// stamped with the base's one timestamp.
func (s *Session) Edit(p firstboot.Payload) diskimg.Edit {
	e := diskimg.Edit{CmdlineAdd: p.CmdlineAdd, ConfigTxt: p.ConfigTxt, Time: s.Base.Stamp}
	for _, f := range p.Files {
		e.Files = append(e.Files, diskimg.File{Path: f.Path, Data: f.Data, Source: f.Source})
	}
	return e
}

// RecipeHash identifies the resolved recipe, secrets included (under the
// run's secret key, never shown), so the manifest changes when any input
// does.
func (s *Session) RecipeHash() string {
	r := s.R
	h := keyedHash(s.recipeKey())
	plan := recipes.NewPlan(r)
	plan.Output.Dir = "" // where the images go is not what they are
	json.NewEncoder(h).Encode(plan)
	fmt.Fprintf(h, "token %s\nagent %s\n", r.Cluster.Token.Reveal(), r.Cluster.AgentToken.Reveal())
	for _, n := range r.Nodes {
		if n.User != nil {
			fmt.Fprintf(h, "user %s %s\n", n.Hostname, n.User.PasswordHash.Reveal())
		}
		if n.WiFi != nil {
			fmt.Fprintf(h, "wifi %s %s\n", n.Hostname, n.WiFi.PSK.Reveal())
		}
	}
	return hexSum(h)
}
