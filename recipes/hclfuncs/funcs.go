// Package hclfuncs holds the functions a recipe may call: pibake's own
// (env, file, cidrhost) and the cty standard library under Terraform's
// names.
package hclfuncs

import (
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/pibake/pibake/recipes/diag"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// Functions returns the functions a recipe may call. Relative paths given
// to file() are resolved against dir.
func Functions(dir string) map[string]function.Function {
	return map[string]function.Function{
		// pibake's own.
		"env":      envFunc,
		"file":     fileFunc(dir),
		"cidrhost": cidrhostFunc,

		"ssh_public_keys": sshPublicKeysFunc,

		// The cty standard library, under the names Terraform users know.
		"abs":          stdlib.AbsoluteFunc,
		"ceil":         stdlib.CeilFunc,
		"chomp":        stdlib.ChompFunc,
		"chunklist":    stdlib.ChunklistFunc,
		"coalesce":     stdlib.CoalesceFunc,
		"compact":      stdlib.CompactFunc,
		"concat":       stdlib.ConcatFunc,
		"contains":     stdlib.ContainsFunc,
		"distinct":     stdlib.DistinctFunc,
		"element":      stdlib.ElementFunc,
		"flatten":      stdlib.FlattenFunc,
		"floor":        stdlib.FloorFunc,
		"format":       stdlib.FormatFunc,
		"formatlist":   stdlib.FormatListFunc,
		"indent":       stdlib.IndentFunc,
		"join":         stdlib.JoinFunc,
		"jsonencode":   stdlib.JSONEncodeFunc,
		"keys":         stdlib.KeysFunc,
		"length":       stdlib.LengthFunc,
		"lookup":       stdlib.LookupFunc,
		"lower":        stdlib.LowerFunc,
		"max":          stdlib.MaxFunc,
		"merge":        stdlib.MergeFunc,
		"min":          stdlib.MinFunc,
		"parseint":     stdlib.ParseIntFunc,
		"range":        stdlib.RangeFunc,
		"regex":        stdlib.RegexFunc,
		"regexall":     stdlib.RegexAllFunc,
		"replace":      stdlib.ReplaceFunc,
		"reverse":      stdlib.ReverseListFunc,
		"slice":        stdlib.SliceFunc,
		"sort":         stdlib.SortFunc,
		"split":        stdlib.SplitFunc,
		"strlen":       stdlib.StrlenFunc,
		"substr":       stdlib.SubstrFunc,
		"title":        stdlib.TitleFunc,
		"trim":         stdlib.TrimFunc,
		"trimprefix":   stdlib.TrimPrefixFunc,
		"trimspace":    stdlib.TrimSpaceFunc,
		"trimsuffix":   stdlib.TrimSuffixFunc,
		"upper":        stdlib.UpperFunc,
		"values":       stdlib.ValuesFunc,
		"zipmap":       stdlib.ZipmapFunc,
		"regexreplace": stdlib.RegexReplaceFunc,
	}
}

// envFunc returns an environment variable. Unset is an error rather than
// "": a recipe that says env("K3S_TOKEN") means it, and an empty token
// would otherwise surface far from its cause.
var envFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "name", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		name := args[0].AsString()
		if name == "" {
			return cty.NilVal, fmt.Errorf("env needs the name of an environment variable, such as env(\"K3S_TOKEN\"); it was given an empty string")
		}
		v, ok := os.LookupEnv(name)
		if !ok {
			return cty.NilVal, fmt.Errorf("environment variable %s is not set; set it (export %s=...) or write the value in the recipe", name, name)
		}
		return cty.StringVal(v), nil
	},
})

// fileFunc reads a file relative to the recipe's directory; a leading ~/
// is the user's home directory.
func fileFunc(dir string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			path, err := ResolvePath(dir, args[0].AsString())
			if err != nil {
				return cty.NilVal, err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return cty.NilVal, fmt.Errorf("read %s: %s", path, diag.DescribeOSError(err))
			}
			return cty.StringVal(string(b)), nil
		},
	})
}

// PublicKeyFiles are where ssh_public_keys() looks, under ~/.ssh, in
// order: what ssh-keygen writes by default, in the order ssh offers them.
var PublicKeyFiles = []string{"id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"}

// sshPublicKeysFunc returns the user's SSH public key as a list of one,
// for a user block's ssh_authorized_keys: the first of PublicKeyFiles.
// With none (or no home directory, as in CI) it returns an empty list,
// so that a recipe still loads, and the "Nobody can log in" warning says
// why and how to make a key.
var sshPublicKeysFunc = function.New(&function.Spec{
	Type: function.StaticReturnType(cty.List(cty.String)),
	Impl: func([]cty.Value, cty.Type) (cty.Value, error) {
		if key, _ := UserPublicKey(); key != "" {
			return cty.ListVal([]cty.Value{cty.StringVal(key)}), nil
		}
		return cty.ListValEmpty(cty.String), nil
	},
})

// UserPublicKey is the first of ~/.ssh's PublicKeyFiles, trimmed, and
// its path; "" when there is none.
func UserPublicKey() (key, path string) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", ""
	}
	for _, name := range PublicKeyFiles {
		p := filepath.Join(home, ".ssh", name)
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) != "" {
			return strings.TrimSpace(string(b)), p
		}
	}
	return "", ""
}

// ResolvePath expands a leading ~/ and makes a relative path relative to dir.
func ResolvePath(dir, path string) (string, error) {
	if path == "~" || strings.HasPrefix(path, "~/") {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("expand ~ in %q: %w", path, err)
		}
		path = filepath.Join(home, strings.TrimPrefix(path, "~"))
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	return path, nil
}

// cidrhostFunc returns the n-th address of a prefix, like Terraform's
// cidrhost: cidrhost("192.168.1.0/24", 10) is "192.168.1.10". A negative n
// counts back from the end of the prefix.
var cidrhostFunc = function.New(&function.Spec{
	Params: []function.Parameter{
		{Name: "prefix", Type: cty.String},
		{Name: "hostnum", Type: cty.Number},
	},
	Type: function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		prefix, err := netip.ParsePrefix(args[0].AsString())
		if err != nil {
			return cty.NilVal, function.NewArgErrorf(0, "%q is not a prefix such as 192.168.1.0/24", args[0].AsString())
		}
		num := args[1].AsBigFloat()
		if !num.IsInt() {
			return cty.NilVal, function.NewArgErrorf(1, "host number must be a whole number")
		}
		n, _ := num.Int(nil)
		addr, err := nthAddress(prefix.Masked(), n)
		if err != nil {
			return cty.NilVal, function.NewArgError(1, err)
		}
		return cty.StringVal(addr.String()), nil
	},
})

func nthAddress(p netip.Prefix, n *big.Int) (netip.Addr, error) {
	bits := p.Addr().BitLen()
	hostBits := uint(bits - p.Bits())
	size := new(big.Int).Lsh(big.NewInt(1), hostBits)
	if n.Sign() < 0 {
		n = new(big.Int).Add(size, n)
	}
	if n.Sign() < 0 || n.Cmp(size) >= 0 {
		return netip.Addr{}, fmt.Errorf("prefix %s has no host number %s (it holds %s addresses)", p, n, size)
	}
	base := new(big.Int).SetBytes(p.Addr().AsSlice())
	sum := new(big.Int).Add(base, n).Bytes()
	buf := make([]byte, bits/8)
	copy(buf[len(buf)-len(sum):], sum)
	addr, _ := netip.AddrFromSlice(buf)
	return addr, nil
}
