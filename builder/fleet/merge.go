package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/builder/outdir/seam"
	"github.com/pibake/pibake/builder/sign"
)

// MergeOptions configure Merge.
type MergeOptions struct {
	Logf func(format string, args ...any)
	// FS is where the merged directory's steps go (a test stops them);
	// nil is the running system's.
	FS seam.FS
	// AllowPartial merges shards that do not make the whole fleet (a
	// shard not given, a node a shard did not build), with a warning
	// naming what is missing. Never the default: a lost CI artifact
	// would otherwise ship half a fleet.
	AllowPartial bool
	// SignKey, when set, signs SHA256SUMS and provenance.json once the
	// merge is done (outdir.Dir.Sign), as builder.Options.SignKey does;
	// Prompt asks for its passphrase (nil: sign.TerminalPrompt).
	SignKey string
	Prompt  sign.Prompt
}

// ErrIncomplete is returned (wrapped) when the shards do not hold every
// node of the recipe: the message names the shards and nodes missing.
var ErrIncomplete = errors.New("the shards do not make the whole fleet")

// Merge puts shard output directories together into dir: every node's
// files (hard-linked where the file system allows, else copied, and
// checked against the shard's checksums either way), the cluster's
// secrets, and one manifest, SHA256SUMS and os_list.json for all. The
// shards must come from one recipe, one base image, one pibake and one
// set of secrets, no node may be in two of them, and (unless
// AllowPartial) they must be every shard of one split, each holding its
// share of the recipe's nodes, current.
func Merge(ctx context.Context, dir string, shards []string, opt MergeOptions) error {
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	ms, err := readShards(shards)
	if err != nil {
		return err
	}
	built := builtShards(ms)
	if err := sameBuild(shards, ms, built); err != nil {
		return err
	}
	if missing := complete(shards, ms, built); len(missing) > 0 {
		if !opt.AllowPartial {
			return fmt.Errorf("%w: %s; give the directory of every shard, each built whole (pibake build RECIPE --shard I/N in a copy of the pibake init directory), or pass --allow-partial to merge only what is there", ErrIncomplete, strings.Join(missing, "; "))
		}
		opt.Logf("warning: merging what is there (--allow-partial), but %v: %s", ErrIncomplete, strings.Join(missing, "; "))
	}
	signer, err := LoadSigner(opt.SignKey, opt.Prompt)
	if err != nil {
		return err
	}
	defer signer.Close()
	d, err := outdir.Open(ctx, dir, outdir.Options{Logf: opt.Logf, FS: opt.FS})
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.ImportSecrets(shards); err != nil {
		return err
	}
	for i, m := range ms {
		for _, n := range m.Nodes {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := d.Import(ctx, shards[i], n); err != nil {
				return err
			}
			opt.Logf("%s: merged from %s", n.Hostname, shards[i])
		}
	}
	first := ms[0]
	if len(built) > 0 {
		first = ms[built[0]]
	}
	if err := d.Update(func(m *outdir.Manifest) {
		nodes, records := m.Nodes, m.Records
		*m = first
		m.Nodes, m.Records, m.Shard = nodes, records, ""
	}); err != nil {
		return err
	}
	return finishMerge(ctx, d, shards, ms, signer, opt.Logf)
}

// finishMerge writes the merged records and, with a key, signs them.
func finishMerge(ctx context.Context, d *outdir.Dir, shards []string, ms []outdir.Manifest, signer *sign.Signer, logf func(string, ...any)) error {
	if err := mergeRecords(ctx, d, shards, ms); err != nil {
		return err
	}
	if signer == nil {
		return nil
	}
	if err := d.Sign(signer.Bytes); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	logf("signed SHA256SUMS and %s", outdir.ProvenanceFile)
	return nil
}

// readShards reads the shards' manifests.
func readShards(shards []string) ([]outdir.Manifest, error) {
	if len(shards) == 0 {
		return nil, errors.New("no shard directories")
	}
	ms := make([]outdir.Manifest, len(shards))
	for i, s := range shards {
		ms[i] = outdir.ReadManifest(s)
		if ms[i].Cluster == "" {
			return nil, fmt.Errorf("%s holds no pibake manifest.json", s)
		}
	}
	return ms, nil
}

// builtShards are the indexes of the shards a build ran in: not a bare
// pibake init directory (no --shard recorded, no node).
func builtShards(ms []outdir.Manifest) []int {
	var built []int
	for i, m := range ms {
		if m.Shard != "" || len(m.Nodes) > 0 {
			built = append(built, i)
		}
	}
	return built
}

// sameBuild checks that the built shards are of one recipe, base, pibake
// and set of secrets, of one split given once each, and that no node is
// in two.
func sameBuild(shards []string, ms []outdir.Manifest, built []int) error {
	if len(built) == 0 {
		return nil
	}
	first, f := ms[built[0]], shards[built[0]]
	from, seen := map[string]string{}, map[int]string{}
	for _, i := range built {
		m := ms[i]
		// The recipe's hash covers the secrets too: the more telling
		// differences come first.
		for _, d := range []struct{ what, a, b string }{
			{"cluster", first.Cluster, m.Cluster}, {"cluster token", first.TokenID + first.Token, m.TokenID + m.Token},
			{"cluster CA", first.CAHash, m.CAHash}, {"pibake version", first.PibakeVersion, m.PibakeVersion},
			{"base image", first.Base.SHA256, m.Base.SHA256}, {"recipe", first.RecipeHash, m.RecipeHash},
		} {
			if d.a != d.b {
				return fmt.Errorf("%s and %s were built with another %s; build every shard from one recipe, in copies of one pibake init directory", f, shards[i], d.what)
			}
		}
		if err := sameSplit(f, first, shards[i], m, seen); err != nil {
			return err
		}
		for _, n := range m.Nodes {
			if prev, ok := from[n.Hostname]; ok {
				return fmt.Errorf("node %s is in %s and in %s; each node belongs to one shard", n.Hostname, prev, shards[i])
			}
			from[n.Hostname] = shards[i]
		}
	}
	return nil
}

// sameSplit checks that shard b (manifest mb) is of a's split (--shard
// I/N with one N), and that no shard of the split is given twice (seen
// maps an index to the first directory of that shard).
func sameSplit(a string, ma outdir.Manifest, b string, mb outdir.Manifest, seen map[int]string) error {
	for _, s := range []struct {
		dir string
		m   outdir.Manifest
	}{{a, ma}, {b, mb}} {
		if len(s.m.RecipeNodes) == 0 {
			return fmt.Errorf("%s does not record its recipe's nodes or its shard (a pibake before merge checked them built it): build it again with this pibake", s.dir)
		}
		if _, err := splitOf(s.m); err != nil {
			return fmt.Errorf("%s: manifest.json records %w", s.dir, err)
		}
	}
	sa, _ := splitOf(ma)
	sb, _ := splitOf(mb)
	if sa.Count != sb.Count {
		return fmt.Errorf("%s is %s and %s is %s: give the shards of one split (--shard I/N with one N)", a, describe(ma), b, describe(mb))
	}
	if prev, ok := seen[sb.Index]; ok {
		return fmt.Errorf("%s and %s are both %s: give each shard once", prev, b, describe(mb))
	}
	seen[sb.Index] = b
	return nil
}

// splitOf is the shard a manifest's build built: 1/1 for the whole recipe.
func splitOf(m outdir.Manifest) (Shard, error) {
	if m.Shard == "" {
		return Shard{Index: 1, Count: 1}, nil
	}
	return ParseShard(m.Shard)
}

// describe names what a manifest's build built, for messages.
func describe(m outdir.Manifest) string {
	if m.Shard == "" {
		return "a build of the whole recipe (no --shard)"
	}
	return "shard " + m.Shard
}

// complete checks that the built shards are every shard of their split
// and each holds its share of the recipe's nodes, current: it says what
// is missing, if anything.
func complete(shards []string, ms []outdir.Manifest, built []int) []string {
	var missing []string
	for i, m := range ms {
		if m.Shard == "" && len(m.Nodes) == 0 {
			missing = append(missing, fmt.Sprintf("%s holds no node (a pibake init directory no shard was built in)", shards[i]))
		}
	}
	if len(built) > 0 {
		missing = append(missing, missingShares(shards, ms, built)...)
	}
	return missing
}

// missingShares lists the shards of the split not given, and the nodes
// a given shard should hold and does not (or holds outdated).
func missingShares(shards []string, ms []outdir.Manifest, built []int) []string {
	ref := ms[built[0]]
	split, _ := splitOf(ref)
	given := map[int]int{}
	for _, i := range built {
		sh, _ := splitOf(ms[i])
		given[sh.Index] = i
	}
	var missing []string
	for idx := 1; idx <= split.Count; idx++ {
		sh := Shard{Index: idx, Count: split.Count}
		var share []string
		for j, h := range ref.RecipeNodes {
			if sh.Has(j) {
				share = append(share, h)
			}
		}
		i, ok := given[idx]
		if !ok {
			missing = append(missing, fmt.Sprintf("shard %s (%s) is not given", sh, nodeList(share)))
			continue
		}
		var lacks []string
		for _, h := range share {
			switch n := ms[i].Node(h); {
			case n == nil:
				lacks = append(lacks, h)
			case n.State != outdir.StateCurrent:
				lacks = append(lacks, h+" (its image there is "+n.State+")")
			}
		}
		if len(lacks) > 0 {
			missing = append(missing, fmt.Sprintf("%s (%s) lacks %s", shards[i], describe(ms[i]), nodeList(lacks)))
		}
	}
	return missing
}

// nodeList names hosts for a message.
func nodeList(hosts []string) string {
	switch len(hosts) {
	case 0:
		return "no node"
	case 1:
		return "node " + hosts[0]
	}
	return "nodes " + strings.Join(hosts, ", ")
}
