package sign

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// AllowedSigner is one line of an allowed_signers file (ssh-keygen(1),
// "ALLOWED SIGNERS"): principals, options, a public key.
type AllowedSigner struct {
	Principals []string
	// Namespaces, when not empty, are the only namespaces the key may
	// sign for (the namespaces="..." option).
	Namespaces []string
	Key        ssh.PublicKey
}

func (a AllowedSigner) allows(namespace string) bool {
	if len(a.Namespaces) == 0 {
		return true
	}
	for _, n := range a.Namespaces {
		if matchPattern(namespace, n) {
			return true
		}
	}
	return false
}

// ParseAllowedSigners parses an allowed_signers file. Lines with the
// cert-authority option, or valid-after/valid-before (which need a
// signature time pibake's signatures do not carry), are refused with
// their line number rather than silently trusted or skipped.
func ParseAllowedSigners(b []byte) ([]AllowedSigner, error) {
	var out []AllowedSigner
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		a, err := parseAllowedLine(line)
		if err != nil {
			return nil, fmt.Errorf("allowed signers line %d: %w", n, err)
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("allowed signers: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("allowed signers: no signer listed")
	}
	return out, nil
}

func parseAllowedLine(line string) (AllowedSigner, error) {
	principals, rest, _ := strings.Cut(line, " ")
	var a AllowedSigner
	for _, p := range strings.Split(principals, ",") {
		if p != "" {
			a.Principals = append(a.Principals, p)
		}
	}
	rest = strings.TrimLeft(rest, " \t")
	// Options come before the key unless the next word is a key type.
	if f := strings.Fields(rest); len(f) > 0 && !isKeyType(f[0]) {
		opts, after := splitOptions(rest)
		for _, o := range opts {
			name, value, _ := strings.Cut(o, "=")
			switch strings.ToLower(name) {
			case "namespaces":
				a.Namespaces = append(a.Namespaces, strings.Split(strings.Trim(value, `"`), ",")...)
			case "cert-authority", "valid-after", "valid-before":
				return a, fmt.Errorf("option %s is not supported by pibake verify (use ssh-keygen -Y verify for it)", name)
			default:
				return a, fmt.Errorf("unknown option %q", name)
			}
		}
		rest = after
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rest))
	if err != nil {
		return a, fmt.Errorf("public key: %w", err)
	}
	a.Key = key
	if len(a.Principals) == 0 {
		return a, fmt.Errorf("no principal")
	}
	return a, nil
}

func isKeyType(w string) bool {
	switch w {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoRSA, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
		return true
	}
	return false
}

// splitOptions splits a comma-separated option list, with double-quoted
// values that may hold commas, from what follows it.
func splitOptions(s string) (opts []string, rest string) {
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			quoted = !quoted
			cur.WriteByte(c)
		case c == ',' && !quoted:
			opts = append(opts, cur.String())
			cur.Reset()
		case (c == ' ' || c == '\t') && !quoted:
			return append(opts, cur.String()), strings.TrimLeft(s[i:], " \t")
		default:
			cur.WriteByte(c)
		}
	}
	return append(opts, cur.String()), ""
}

// matchPattern matches s against an OpenSSH pattern with * and ?
// (match.c's match_pattern).
func matchPattern(s, pattern string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for i := len(s); i >= 0; i-- {
				if matchPattern(s[i:], pattern[1:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != pattern[0] {
				return false
			}
		}
		s, pattern = s[1:], pattern[1:]
	}
	return s == ""
}
