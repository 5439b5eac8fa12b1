// Package sign signs pibake's outputs (SHA256SUMS, provenance.json) in
// OpenSSH's SSHSIG format, so that `ssh-keygen -Y verify` checks them
// without pibake, and verifies such signatures against an
// allowed_signers file.
//
// The format is OpenSSH's PROTOCOL.sshsig (and sshsig.c of OpenSSH 9.x):
// short enough to write here, next to the allowed_signers parsing that no
// small library offers, with golang.org/x/crypto/ssh for keys, signatures
// and ssh-agent.
package sign

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Namespace is the SSHSIG namespace of pibake's signatures: a signature
// made for pibake cannot pass for one over an email or a git commit
// (ssh-keygen -Y verify ... -n pibake).
const Namespace = "pibake"

const (
	magic      = "SSHSIG"
	sigVersion = 1
	armorBegin = "-----BEGIN SSH SIGNATURE-----"
	armorEnd   = "-----END SSH SIGNATURE-----"
	// hashAlg is what ssh-keygen uses by default.
	hashAlg = "sha512"
)

// signedData is what the key signs (PROTOCOL.sshsig: "Signed Data, of
// which the signature goes into the blob above").
type signedData struct {
	Magic     [6]byte
	Namespace string
	Reserved  string
	HashAlg   string
	Hash      string
}

// blob is the signature (PROTOCOL.sshsig: "Blob format").
type blob struct {
	Magic     [6]byte
	Version   uint32
	PublicKey string
	Namespace string
	Reserved  string
	HashAlg   string
	Signature string
}

func newHash(alg string) (hash.Hash, error) {
	switch alg {
	case "sha512":
		return sha512.New(), nil
	case "sha256":
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("hash algorithm %q is not one SSHSIG allows (sha256, sha512)", alg)
}

func messageHash(alg string, message io.Reader) ([]byte, error) {
	h, err := newHash(alg)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(h, message); err != nil {
		return nil, fmt.Errorf("read the signed file: %w", err)
	}
	return h.Sum(nil), nil
}

func toSign(namespace, alg string, digest []byte) []byte {
	d := signedData{Namespace: namespace, HashAlg: alg, Hash: string(digest)}
	copy(d.Magic[:], magic)
	return ssh.Marshal(d)
}

// Sign signs message for namespace with s and returns the armored
// signature, as `ssh-keygen -Y sign` writes it.
func Sign(s *Signer, message io.Reader, namespace string) ([]byte, error) {
	digest, err := messageHash(hashAlg, message)
	if err != nil {
		return nil, err
	}
	sig, err := s.sign(toSign(namespace, hashAlg, digest))
	if err != nil {
		return nil, fmt.Errorf("sign with %s: %w", s, err)
	}
	b := blob{Version: sigVersion, PublicKey: string(s.pub.Marshal()), Namespace: namespace, HashAlg: hashAlg, Signature: string(ssh.Marshal(sig))}
	copy(b.Magic[:], magic)
	return armor(ssh.Marshal(b)), nil
}

// armor wraps a blob as sshsig.c's sshsig_armor does: base64 in lines of
// 70 characters between the BEGIN and END lines.
func armor(b []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(b)
	var out bytes.Buffer
	out.WriteString(armorBegin + "\n")
	for len(enc) > 70 {
		out.WriteString(enc[:70] + "\n")
		enc = enc[70:]
	}
	out.WriteString(enc + "\n" + armorEnd + "\n")
	return out.Bytes()
}

func dearmor(sig []byte) ([]byte, error) {
	s := strings.TrimSpace(string(sig))
	if !strings.HasPrefix(s, armorBegin) || !strings.HasSuffix(s, armorEnd) {
		return nil, errors.New("not an SSH signature (no BEGIN/END SSH SIGNATURE lines)")
	}
	body := strings.Join(strings.Fields(s[len(armorBegin):len(s)-len(armorEnd)]), "")
	b, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("SSH signature: bad base64: %w", err)
	}
	return b, nil
}

// ErrBadSignature is returned (wrapped) when a signature does not match
// the file, was made for another namespace, or is malformed.
var ErrBadSignature = errors.New("bad signature")

// ErrUnknownSigner is returned (wrapped) when a good signature's key is
// not among the allowed signers for the namespace.
var ErrUnknownSigner = errors.New("signer not allowed")

// Verify checks an armored signature of message for namespace, and that
// its key is one of allowed, and returns the principals allowed_signers
// lists for that key. It checks what `ssh-keygen -Y verify` checks for a
// plain key; certificate authorities are not supported.
func Verify(message io.Reader, sig []byte, namespace string, allowed []AllowedSigner) ([]string, error) {
	pub, err := checkSignature(message, sig, namespace)
	if err != nil {
		return nil, err
	}
	var principals []string
	for _, a := range allowed {
		if bytes.Equal(a.Key.Marshal(), pub.Marshal()) && a.allows(namespace) {
			principals = append(principals, a.Principals...)
		}
	}
	if len(principals) == 0 {
		return nil, fmt.Errorf("%w: key %s %s is not in the allowed signers for namespace %q", ErrUnknownSigner, pub.Type(), ssh.FingerprintSHA256(pub), namespace)
	}
	return principals, nil
}

// checkSignature checks the signature itself and returns its key.
func checkSignature(message io.Reader, sig []byte, namespace string) (ssh.PublicKey, error) {
	raw, err := dearmor(sig)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	var b blob
	if err := ssh.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("%w: malformed SSHSIG blob: %w", ErrBadSignature, err)
	}
	switch {
	case string(b.Magic[:]) != magic:
		return nil, fmt.Errorf("%w: no SSHSIG magic", ErrBadSignature)
	case b.Version != sigVersion:
		return nil, fmt.Errorf("%w: SSHSIG version %d (only 1 exists)", ErrBadSignature, b.Version)
	case b.Namespace != namespace:
		return nil, fmt.Errorf("%w: made for namespace %q, not %q", ErrBadSignature, b.Namespace, namespace)
	}
	pub, err := ssh.ParsePublicKey([]byte(b.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("%w: its public key: %w", ErrBadSignature, err)
	}
	var s ssh.Signature
	if err := ssh.Unmarshal([]byte(b.Signature), &s); err != nil {
		return nil, fmt.Errorf("%w: malformed signature: %w", ErrBadSignature, err)
	}
	// sshsig.c refuses SHA-1 RSA signatures ("ssh-rsa"), as we do.
	if pub.Type() == ssh.KeyAlgoRSA && s.Format != ssh.KeyAlgoRSASHA256 && s.Format != ssh.KeyAlgoRSASHA512 {
		return nil, fmt.Errorf("%w: RSA signature of type %q (SSHSIG wants rsa-sha2-256 or rsa-sha2-512)", ErrBadSignature, s.Format)
	}
	digest, err := messageHash(b.HashAlg, message)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if err := pub.Verify(toSign(namespace, b.HashAlg, digest), &s); err != nil {
		return nil, fmt.Errorf("%w: the signature does not match the file (key %s): %w", ErrBadSignature, ssh.FingerprintSHA256(pub), err)
	}
	return pub, nil
}
