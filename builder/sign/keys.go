package sign

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/pibake/pibake/internal/atomicfile"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Signer is a key that signs: a private key file's, or one held by
// ssh-agent. Its String names the key (type and fingerprint), never its
// secret.
type Signer struct {
	pub  ssh.PublicKey
	sign func(data []byte) (*ssh.Signature, error)
	from string // the key file, for messages
	// close ends the agent connection (nil for a key file).
	close func() error
}

// PublicKey is the signer's public key.
func (s *Signer) PublicKey() ssh.PublicKey { return s.pub }

func (s *Signer) String() string {
	return fmt.Sprintf("%s key %s (%s)", s.pub.Type(), ssh.FingerprintSHA256(s.pub), s.from)
}

// Close releases the signer (the ssh-agent connection); a nil Signer
// has nothing to release.
func (s *Signer) Close() error {
	if s != nil && s.close != nil {
		return s.close()
	}
	return nil
}

// Prompt asks for a key's passphrase: on a terminal, never from argv or
// the environment; tests inject one.
type Prompt func(question string) ([]byte, error)

// passphraseTries is how often a wrong passphrase is asked again, as
// ssh-add does.
const passphraseTries = 3

// Load opens the signing key at path, the way `ssh-keygen -Y sign -f`
// takes it: a private key file (OpenSSH, PKCS#8 or PEM; ed25519, ECDSA,
// or RSA of at least 2048 bits, which signs with rsa-sha2-512), asking
// prompt for its passphrase when it has one; or a public key file whose
// private half ssh-agent holds (SSH_AUTH_SOCK).
func Load(path string, prompt Prompt) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if pub, _, _, _, err := ssh.ParseAuthorizedKey(b); err == nil {
		return fromAgent(path, pub)
	}
	key, err := ssh.ParseRawPrivateKey(b)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		key, err = withPassphrase(path, b, prompt)
		if err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: not an OpenSSH private or public key: %w", path, err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	if err := usable(signer.PublicKey(), key); err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return &Signer{pub: signer.PublicKey(), from: path, sign: signWith(signer)}, nil
}

// withPassphrase decrypts a private key with a passphrase from prompt,
// asking again after a wrong one, as ssh-add does.
func withPassphrase(path string, b []byte, prompt Prompt) (any, error) {
	if prompt == nil {
		return nil, fmt.Errorf("signing key %s has a passphrase, and there is no terminal to ask it on (load the key into ssh-agent and name its .pub file instead)", path)
	}
	for try := 0; try < passphraseTries; try++ {
		pass, err := prompt(fmt.Sprintf("Enter passphrase for %s: ", path))
		if err != nil {
			return nil, fmt.Errorf("signing key %s: passphrase: %w", path, err)
		}
		key, err := ssh.ParseRawPrivateKeyWithPassphrase(b, pass)
		clear(pass)
		if err == nil {
			return key, nil
		}
		if !errors.Is(err, x509.IncorrectPasswordError) {
			return nil, fmt.Errorf("signing key %s: %w", path, err)
		}
	}
	return nil, fmt.Errorf("signing key %s: wrong passphrase, %d tries", path, passphraseTries)
}

// usable refuses keys ssh-keygen would not sign with.
func usable(pub ssh.PublicKey, key any) error {
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		return nil
	case ssh.KeyAlgoRSA:
		if k, ok := key.(*rsa.PrivateKey); ok && k.N.BitLen() < 2048 {
			return fmt.Errorf("an RSA key of %d bits is too weak; use 2048 bits or more, or ed25519", k.N.BitLen())
		}
		return nil
	}
	return fmt.Errorf("%s keys cannot sign here; use ed25519, ECDSA or RSA", pub.Type())
}

// signWith signs with s, RSA keys with rsa-sha2-512 (SSHSIG refuses the
// SHA-1 "ssh-rsa" signatures an RSA key makes by default).
func signWith(s ssh.Signer) func([]byte) (*ssh.Signature, error) {
	return func(data []byte) (*ssh.Signature, error) {
		if s.PublicKey().Type() == ssh.KeyAlgoRSA {
			as, ok := s.(ssh.AlgorithmSigner)
			if !ok {
				return nil, errors.New("this RSA signer cannot make rsa-sha2-512 signatures")
			}
			return as.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSASHA512)
		}
		return s.Sign(rand.Reader, data)
	}
}

// fromAgent finds the key pub in ssh-agent.
func fromAgent(path string, pub ssh.PublicKey) (*Signer, error) {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil, fmt.Errorf("signing key %s is a public key, whose private half ssh-agent would hold, but SSH_AUTH_SOCK is not set (start ssh-agent and ssh-add the key, or name the private key file)", path)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: connect to ssh-agent at %s: %w", path, sock, err)
	}
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("signing key %s: list ssh-agent's keys: %w", path, err)
	}
	for _, s := range signers {
		if bytes.Equal(s.PublicKey().Marshal(), pub.Marshal()) {
			if err := usable(pub, nil); err != nil {
				conn.Close()
				return nil, fmt.Errorf("signing key %s: %w", path, err)
			}
			return &Signer{pub: pub, from: path + " in ssh-agent", sign: signWith(s), close: conn.Close}, nil
		}
	}
	conn.Close()
	return nil, fmt.Errorf("signing key %s: ssh-agent does not hold it (%s %s); ssh-add its private key", path, pub.Type(), ssh.FingerprintSHA256(pub))
}

// SigSuffix is added to a file's name for its signature.
const SigSuffix = ".sig"

// File signs the file at path with s for Namespace and writes the
// signature to path+".sig" (atomically), returning that path.
func File(s *Signer, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("sign %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	sig, err := Sign(s, f, Namespace)
	if err != nil {
		return "", fmt.Errorf("sign %s: %w", filepath.Base(path), err)
	}
	out := path + SigSuffix
	if err := atomicfile.WriteFile(out, sig, 0o644); err != nil {
		return "", fmt.Errorf("sign %s: %w", filepath.Base(path), err)
	}
	return out, nil
}

// VerifyFile checks path against its signature path+".sig".
func VerifyFile(path string, allowed []AllowedSigner) ([]string, error) {
	sig, err := os.ReadFile(path + SigSuffix)
	if err != nil {
		return nil, fmt.Errorf("signature of %s: %w", filepath.Base(path), err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := Verify(f, sig, Namespace, allowed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path)+SigSuffix, err)
	}
	return p, nil
}

// ErrNoTerminal is what TerminalPrompt says without a terminal to ask on.
var ErrNoTerminal = errors.New("no terminal to ask it on (load the key into ssh-agent with ssh-add and give its .pub file instead)")

// Bytes signs data for Namespace: a signature file's content.
func (s *Signer) Bytes(data []byte) ([]byte, error) {
	return Sign(s, bytes.NewReader(data), Namespace)
}
