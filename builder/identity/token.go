package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// The users a join token names: "server" for the server token, "node" for
// the agent token (pkg/daemons/control/deps/deps.go, readTokens, and the
// agent-token file k3s writes).
const (
	ServerUser = "server"
	AgentUser  = "node"
)

// Token is the secure ("full") join token k3s's own token files hold:
// K10<CA hash>::<user>:<secret> (pkg/clientaccess/token.go, tokenFormat
// and FormatTokenBytes). A node that joins with it checks the CA the
// server presents against the hash before it sends the secret.
func Token(caHash, user, secret string) string {
	return "K10" + caHash + "::" + user + ":" + secret
}

// NodePassword derives the password a node proves its name with
// (/etc/rancher/node/password): 32 hex digits, the shape k3s generates
// (pkg/agent/config, ensureNodePassword). k3s stores a hash of the first
// password a node name registers with and rejects every other ("Node
// password rejected", pkg/nodepassword), so a node re-flashed with a
// random new one cannot rejoin under its name; derived from the cluster
// secret, the cluster and host names and a generation, a rebuilt node
// gets the same password, and one whose card may have been stolen gets a
// new one when its generation is raised. An HMAC: the password tells
// nothing about the secret.
func NodePassword(secret, cluster, host string, generation int) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "pibake node password\x00%s\x00%s\x00%d", cluster, host, generation)
	return hex.EncodeToString(m.Sum(nil))[:32]
}
