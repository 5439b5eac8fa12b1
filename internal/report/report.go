// Package report is the wire format of first-boot reports and their
// receiver: a node POSTs every change of its status record (see
// status.Record) to the recipe's report URL, signed with a key only its
// own build can derive, and `pibake watch` receives them.
//
// A report is one HTTP exchange pair:
//
//	GET  <url>/v1/nonce   → 200, 64 hex digits, good for one report within NonceTTL
//	POST <url>/v1/report  ← {"nonce":"<nonce>","status":<status record>}
//	                        X-Pibake-Signature: sha256=<hex HMAC-SHA256(node key, body)>
//	                      → 204 accepted; 4xx refused, with the reason as text
//
// The node key is NodeKey(out-directory key, hostname, build id): a card
// holds only its own, so it cannot sign for another node or another build
// of itself. A nonce is accepted once, so a captured report cannot be
// replayed; issuing one stores nothing (nonce.go), so asking for many
// costs the receiver no memory. Reports carry no secret: only stage names, reasons and log
// lines, so they travel as plain HTTP on a LAN.
//
// This package is internal to pibake and not a stable API.
package report

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Paths under the report URL, and the signature's header.
const (
	NoncePath       = "/v1/nonce"
	ReportPath      = "/v1/report"
	SignatureHeader = "X-Pibake-Signature"
	signaturePrefix = "sha256="
)

// NodeKey derives the key node host signs its reports with, from the out
// directory's report key and the node's build id.
func NodeKey(outKey []byte, host, build string) []byte {
	m := hmac.New(sha256.New, outKey)
	m.Write([]byte("pibake report v1\x00" + host + "\x00" + build))
	return m.Sum(nil)
}

// Sign is the signature header's value for body.
func Sign(nodeKey, body []byte) string {
	m := hmac.New(sha256.New, nodeKey)
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// verify reports whether sig is body's signature under nodeKey, in
// constant time.
func verify(nodeKey, body []byte, sig string) bool {
	got, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(sig), signaturePrefix))
	if err != nil || !strings.HasPrefix(strings.TrimSpace(sig), signaturePrefix) {
		return false
	}
	m := hmac.New(sha256.New, nodeKey)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}
