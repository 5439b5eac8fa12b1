package identity

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// k3sParseToken is k3s's parseToken (pkg/clientaccess/token.go), rewritten
// as the stand-in for how a joining node reads its token: an optional K10
// prefix, a CA hash that is empty or exactly 64 characters before "::",
// then user:password split at the first colon.
func k3sParseToken(token string) (hash, user, password string, err error) {
	if token == "" {
		return "", "", "", errors.New("token must not be empty")
	}
	if !strings.HasPrefix(token, "K10") {
		token = "K10" + "" + "::" + "" + ":" + token
	}
	token = token[len("K10"):]
	parts := strings.SplitN(token, "::", 2)
	token = parts[0]
	if len(parts) > 1 {
		if len(parts[0]) > 0 && len(parts[0]) != 64 {
			return "", "", "", errors.New("invalid token CA hash length")
		}
		hash, token = parts[0], parts[1]
	}
	parts = strings.SplitN(token, ":", 2)
	if len(parts) != 2 || parts[1] == "" {
		return "", "", "", errors.New("invalid token format")
	}
	return hash, parts[0], parts[1], nil
}

func TestTokenParsesAsK3sParsesIt(t *testing.T) {
	ca := testCA(t)
	for _, tc := range []struct{ user, secret string }{
		{ServerUser, "0123456789abcdef0123456789abcdef"},
		{AgentUser, "a-recipe-token:with:colons"},
		{ServerUser, "x::y-double-colon-token"},
	} {
		tok := Token(ca.Hash(), tc.user, tc.secret)
		hash, user, pw, err := k3sParseToken(tok)
		if err != nil || hash != ca.Hash() || user != tc.user || pw != tc.secret {
			t.Errorf("k3s parses %q as hash %q user %q password %q (%v)", tc.secret, hash, user, pw, err)
		}
	}
	// The stand-in rejects what k3s rejects.
	if _, _, _, err := k3sParseToken("K10abc::server:pw"); err == nil {
		t.Error("the parser stand-in accepted a short CA hash")
	}
	if _, _, _, err := k3sParseToken(Token(ca.Hash(), ServerUser, "")); err == nil {
		t.Error("the parser stand-in accepted an empty password")
	}
}

func TestNodePassword(t *testing.T) {
	p := NodePassword("secret-1", "lab", "pi-01", 0)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(p) {
		t.Fatalf("node password %q is not 32 hex digits", p)
	}
	if NodePassword("secret-1", "lab", "pi-01", 0) != p {
		t.Error("the node password is not deterministic")
	}
	seen := map[string]string{p: "base"}
	for name, q := range map[string]string{
		"other secret":     NodePassword("secret-2", "lab", "pi-01", 0),
		"other cluster":    NodePassword("secret-1", "lab2", "pi-01", 0),
		"other host":       NodePassword("secret-1", "lab", "pi-02", 0),
		"next generation":  NodePassword("secret-1", "lab", "pi-01", 1),
		"host/cluster mix": NodePassword("secret-1", "labp", "i-01", 0),
	} {
		if prev, ok := seen[q]; ok {
			t.Errorf("%s gives the same password as %s", name, prev)
		}
		seen[q] = name
	}
	if strings.Contains(p, "secret") {
		t.Error("the password shows the secret")
	}
}
