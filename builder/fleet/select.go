package fleet

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pibake/pibake/recipes"
)

// ErrUnknownNode is returned when --node (or a flash target, or
// --rotate-node-password) names no node of the recipe.
var ErrUnknownNode = errors.New("unknown node")

// ErrNotSelected is returned when an option names a node that --node
// leaves out.
var ErrNotSelected = errors.New("the node is not among those --node selects")

// Select picks the nodes of a shard that names choose: by hostname, or by
// the label of a node block, which selects every node its count makes.
// No names choose every node.
func Select(r *recipes.Recipe, names []string, shard Shard) ([]*recipes.Node, error) {
	matches := func(n *recipes.Node, name string) bool {
		return strings.EqualFold(name, n.Hostname) || strings.EqualFold(name, n.Group)
	}
	var nodes []*recipes.Node
	for i := range r.Nodes {
		if !shard.Has(i) {
			continue
		}
		if len(names) == 0 || slices.ContainsFunc(names, func(name string) bool { return matches(&r.Nodes[i], name) }) {
			nodes = append(nodes, &r.Nodes[i])
		}
	}
	for _, name := range names {
		if !slices.ContainsFunc(r.Nodes, func(n recipes.Node) bool { return matches(&n, name) }) {
			return nil, unknownNode(r, name)
		}
	}
	return nodes, nil
}

// unknownNode says which node names and node blocks the recipe has.
func unknownNode(r *recipes.Recipe, name string) error {
	var valid, groups []string
	for _, n := range r.Nodes {
		valid = append(valid, n.Hostname)
		if n.Group != n.Hostname && !slices.Contains(groups, n.Group) {
			groups = append(groups, n.Group)
		}
	}
	blocks := ""
	if len(groups) > 0 {
		blocks = "; its node blocks (each selects all its nodes): " + strings.Join(groups, ", ")
	}
	return fmt.Errorf("%w %q; the recipe's nodes are: %s%s", ErrUnknownNode, name, strings.Join(valid, ", "), blocks)
}

// CheckRotations refuses --rotate-node-password for a node the recipe
// does not have, or one this run does not build.
func CheckRotations(r *recipes.Recipe, nodes []*recipes.Node, hosts []string) error {
	for _, host := range hosts {
		if !slices.ContainsFunc(r.Nodes, func(n recipes.Node) bool { return strings.EqualFold(n.Hostname, host) }) {
			return fmt.Errorf("%w %q in --rotate-node-password", ErrUnknownNode, host)
		}
		if !slices.ContainsFunc(nodes, func(n *recipes.Node) bool { return strings.EqualFold(n.Hostname, host) }) {
			return fmt.Errorf("--rotate-node-password %s: %w; add --node %s", host, ErrNotSelected, host)
		}
	}
	return nil
}
