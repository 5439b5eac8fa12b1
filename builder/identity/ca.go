// Package identity makes a k3s cluster's identity before any node boots:
// the certificate authorities k3s accepts as a custom CA, join tokens that
// pin them, an admin client certificate and the nodes' passwords.
//
// Everything here follows the k3s sources, cited where each choice is made.
// None of it has been seen working against a running k3s on this machine:
// see the README's "Cluster identity" section.
//
// This package is internal to pibake and not a stable API.
package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pibake/pibake/internal/atomicfile"
)

// NotBefore is when every certificate pibake makes becomes valid. A Pi has
// no real-time clock: until NTP answers (and on an air-gapped network it
// never does) its clock starts from the time saved in the image, which can
// be long before the build. k3s verifies the CA chain at the node's own
// time when it checks a join token's CA hash, and falls back to a hash of
// the raw file bytes when verification fails (pkg/clientaccess/token.go,
// hashCA), so a certificate from the node's future would make every join
// fail with "token CA hash does not match". 2020-01-01 is before any
// Raspberry Pi OS release pibake supports (Bookworm, 2023) and before the
// clock floor systemd applies at boot.
var NotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// Lifetimes follow k3s's contrib/util/generate-custom-ca-certs.sh: the
// root 7300 days, the intermediate and the five CAs k3s uses 3700 days,
// counted from the day the CA is made (NotBefore is earlier, see above).
const (
	rootDays = 7300
	caDays   = 3700
)

// adminDays is the admin client certificate's lifetime, as k3s gives its
// own admin certificate (dynamiclistener NewSignedCert: 365 days). There
// is no revocation for a client certificate, so it is short, and a build
// renews it when fewer than AdminRenewDays remain (k3s renews its own
// certificates 90 days before they expire).
const (
	adminDays      = 365
	AdminRenewDays = 90
)

// The CAs k3s reads from server/tls, each a .crt bundle (the CA, then the
// intermediate, then the root) and its .key: docs/cli/certificate.md,
// "Using Custom CA Certificates". k3s needs every pair: a missing one it
// silently replaces with a new self-signed CA (pkg/daemons/control/deps
// createSigningCertKey), which would not match the hash the joiners pin.
var caNames = []string{"server-ca", "client-ca", "request-header-ca", "etcd/peer-ca", "etcd/server-ca"}

// ServiceKey is the service-account signing key: RSA 2048, PKCS#1, as k3s
// makes it (deps.go, certutil.NewPrivateKey) and the upstream script does.
const ServiceKey = "service.key"

// K3sFiles are the files a founding server needs in
// /var/lib/rancher/k3s/server/tls, relative to that directory: exactly
// docs/cli/certificate.md's list of required files.
func K3sFiles() []string {
	var files []string
	for _, n := range caNames {
		files = append(files, n+".crt", n+".key")
	}
	return append(files, ServiceKey)
}

// Files kept only in the output directory: the root and intermediate (the
// upstream script says to keep them off cluster members) and the admin
// client certificate.
const (
	rootCert         = "root-ca.crt"
	rootKey          = "root-ca.key"
	intermediateCert = "intermediate-ca.crt"
	intermediateKey  = "intermediate-ca.key"
	adminCert        = "admin.crt"
	adminKey         = "admin.key"
)

func storedFiles() []string {
	return append(K3sFiles(), rootCert, rootKey, intermediateCert, intermediateKey)
}

// ErrIncomplete marks a CA directory that lacks files: it is never
// completed or replaced behind the user's back.
var ErrIncomplete = errors.New("the cluster CA is incomplete")

// CA is a cluster's certificate authorities as stored in the output
// directory.
type CA struct {
	dir   string
	files map[string][]byte
	hash  string
	// Created is when the CA was made (the intermediate's NotAfter less
	// its lifetime); Expires is when the first of its CAs expires.
	Created, Expires time.Time
	admin            *x509.Certificate
}

// Hash is the CA hash every join token pins: what k3s computes for the
// server-ca.crt bundle, the SHA-256 of the root certificate's DER.
func (ca *CA) Hash() string { return ca.hash }

// Dir is the directory the CA is kept in.
func (ca *CA) Dir() string { return ca.dir }

// File returns one of K3sFiles, as it goes into the founding server's
// image.
func (ca *CA) File(name string) []byte { return ca.files[name] }

// Create makes a new set of CAs in dir, which must not exist: built in a
// temporary directory beside it, every file synced, then renamed into
// place, so an interrupted Create leaves no directory that looks complete.
// The directory is 0700 and every file 0600.
func Create(dir string, now time.Time) (*CA, error) {
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("create cluster CA: %s already exists", dir)
	}
	files, err := generate(rand.Reader, now)
	if err != nil {
		return nil, fmt.Errorf("create cluster CA: %w", err)
	}
	parent := filepath.Dir(dir)
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create cluster CA: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op after the rename
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create cluster CA: %w", err)
	}
	if err := writeFiles(tmp, files); err != nil {
		return nil, fmt.Errorf("create cluster CA: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("create cluster CA: %w", err)
	}
	if err := atomicfile.SyncDir(parent); err != nil {
		return nil, fmt.Errorf("create cluster CA: %w", err)
	}
	return Load(dir, now)
}

func writeFiles(dir string, files map[string][]byte) error {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(p, files[name], 0o600); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(filepath.Join(dir, "etcd"))
}

// Load reads and checks the CA kept in dir: every file present, every key
// the key of its certificate, every bundle a chain that verifies to the
// root now and at NotBefore. A missing admin certificate, or one that no
// longer matches, is made again: it is not part of the cluster's identity.
func Load(dir string, now time.Time) (*CA, error) {
	ca := &CA{dir: dir, files: map[string][]byte{}}
	var missing []string
	for _, name := range storedFiles() {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, name)
		case err != nil:
			return nil, fmt.Errorf("read cluster CA: %w", err)
		default:
			ca.files[name] = b
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s lacks %s", ErrIncomplete, dir, strings.Join(missing, ", "))
	}
	if err := ca.check(now); err != nil {
		return nil, fmt.Errorf("cluster CA in %s: %w", dir, err)
	}
	return ca, nil
}

// check verifies what Load read.
func (ca *CA) check(now time.Time) error {
	root, err := parseCert(ca.files[rootCert])
	if err != nil {
		return fmt.Errorf("%s: %w", rootCert, err)
	}
	inter, err := parseCert(ca.files[intermediateCert])
	if err != nil {
		return fmt.Errorf("%s: %w", intermediateCert, err)
	}
	ca.Created = inter.NotAfter.AddDate(0, 0, -caDays)
	ca.Expires = root.NotAfter
	for _, pair := range [][2]string{{rootCert, rootKey}, {intermediateCert, intermediateKey}} {
		if _, err := tls.X509KeyPair(ca.files[pair[0]], ca.files[pair[1]]); err != nil {
			return fmt.Errorf("%s and %s: %w", pair[0], pair[1], err)
		}
	}
	for _, name := range caNames {
		c, err := parseCert(ca.files[name+".crt"])
		if err != nil {
			return fmt.Errorf("%s.crt: %w", name, err)
		}
		if c.NotAfter.Before(ca.Expires) {
			ca.Expires = c.NotAfter
		}
	}
	if inter.NotAfter.Before(ca.Expires) {
		ca.Expires = inter.NotAfter
	}
	if now.After(ca.Expires) {
		return fmt.Errorf("it expired on %s, and k3s cannot use it; start a new cluster with --new-cluster (every node must be re-flashed)", ca.Expires.UTC().Format(time.DateOnly))
	}
	for _, name := range caNames {
		crt, key := name+".crt", name+".key"
		if _, err := tls.X509KeyPair(ca.files[crt], ca.files[key]); err != nil {
			return fmt.Errorf("%s and %s: %w", crt, key, err)
		}
		certs, err := parseCerts(ca.files[crt])
		if err != nil {
			return fmt.Errorf("%s: %w", crt, err)
		}
		if len(certs) != 3 || !certs[1].Equal(inter) || !certs[2].Equal(root) {
			return fmt.Errorf("%s is not the CA followed by %s and %s", crt, intermediateCert, rootCert)
		}
		for _, at := range []time.Time{now, NotBefore} {
			h, err := BundleHash(ca.files[crt], at)
			if err != nil {
				return fmt.Errorf("%s: %w", crt, err)
			}
			if name == "server-ca" {
				ca.hash = h
			}
		}
	}
	if _, err := parseRSAKey(ca.files[ServiceKey]); err != nil {
		return fmt.Errorf("%s: %w", ServiceKey, err)
	}
	ca.admin, _ = ca.loadAdmin()
	return nil
}

// BundleHash computes a CA bundle's hash as k3s does for a join token
// (pkg/clientaccess/token.go, hashCA): for a bundle of more than one
// certificate, the first is verified, at the time given, against the
// others (those without an authority key id, or whose authority key id is
// their own subject key id, count as roots), and the hash is the SHA-256 of
// the chain's root in DER. k3s silently hashes the file's raw bytes instead
// when that verification fails; here that is an error, since a token
// pinning that hash would break the moment the bundle's text changed.
func BundleHash(bundle []byte, at time.Time) (string, error) {
	certs, err := parseCerts(bundle)
	if err != nil {
		return "", err
	}
	if len(certs) < 2 {
		return "", errors.New("a single certificate: k3s would hash the file's bytes, not a root")
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range certs[1:] {
		if len(c.AuthorityKeyId) == 0 || bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId) {
			roots.AddCert(c)
		} else {
			inters.AddCert(c)
		}
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: at})
	if err != nil {
		return "", fmt.Errorf("does not verify at %s, so k3s would hash its raw bytes instead of its root: %w", at.UTC().Format(time.DateOnly), err)
	}
	chain := chains[0]
	sum := sha256.Sum256(chain[len(chain)-1].Raw)
	return hex.EncodeToString(sum[:]), nil
}

// generate makes every stored file, following k3s's
// contrib/util/generate-custom-ca-certs.sh: an RSA-4096 root, an RSA-4096
// intermediate it signs, five EC P-256 CAs the intermediate signs (each
// .crt the CA, the intermediate and the root), and the RSA-2048
// service-account key. Every certificate has the script's v3_ca
// extensions: CA:true, key usage digitalSignature, keyEncipherment,
// keyCertSign, no path length and no extended key usage (an extended key
// usage without serverAuth would make Go's, and so k3s's, verification
// fail), subject and authority key ids; SHA-256 signatures.
func generate(random io.Reader, now time.Time) (map[string][]byte, error) {
	stamp := now.Unix()
	files := map[string][]byte{}
	rootK, err := rsa.GenerateKey(random, 4096)
	if err != nil {
		return nil, err
	}
	root, err := signCA(random, fmt.Sprintf("k3s-root-ca@%d", stamp), now.AddDate(0, 0, rootDays), rootK, nil, nil)
	if err != nil {
		return nil, err
	}
	interK, err := rsa.GenerateKey(random, 4096)
	if err != nil {
		return nil, err
	}
	inter, err := signCA(random, fmt.Sprintf("k3s-intermediate-ca@%d", stamp), now.AddDate(0, 0, caDays), interK, root, rootK)
	if err != nil {
		return nil, err
	}
	files[rootCert] = certPEM(root)
	files[rootKey] = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rootK)})
	files[intermediateCert] = append(certPEM(inter), files[rootCert]...)
	files[intermediateKey] = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(interK)})
	for _, name := range caNames {
		k, err := ecdsa.GenerateKey(elliptic.P256(), random)
		if err != nil {
			return nil, err
		}
		cn := fmt.Sprintf("k3s-%s@%d", strings.ReplaceAll(name, "/", "-"), stamp)
		c, err := signCA(random, cn, now.AddDate(0, 0, caDays), k, inter, interK)
		if err != nil {
			return nil, err
		}
		keyPEM, err := ecKeyPEM(k)
		if err != nil {
			return nil, err
		}
		files[name+".crt"] = append(certPEM(c), files[intermediateCert]...)
		files[name+".key"] = keyPEM
	}
	sk, err := rsa.GenerateKey(random, 2048)
	if err != nil {
		return nil, err
	}
	files[ServiceKey] = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sk)})
	return files, nil
}

// signCA makes a CA certificate for key, signed by parent (self-signed
// when parent is nil).
func signCA(random io.Reader, cn string, notAfter time.Time, key crypto.Signer, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(random, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             NotBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    sigAlg(parentKey, key),
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(random, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// sigAlg is SHA-256 with the signer's algorithm (the script's default_md).
func sigAlg(parentKey, key crypto.Signer) x509.SignatureAlgorithm {
	if parentKey == nil {
		parentKey = key
	}
	if _, ok := parentKey.(*ecdsa.PrivateKey); ok {
		return x509.ECDSAWithSHA256
	}
	return x509.SHA256WithRSA
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// ecKeyPEM encodes an EC key as "EC PRIVATE KEY" (SEC 1), the form k3s
// writes (certutil.MakeEllipticPrivateKeyPEM) and `openssl ecparam -genkey
// -noout` gives.
func ecKeyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a %s block where certificates belong", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs, nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	certs, err := parseCerts(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func parseRSAKey(b []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "RSA PRIVATE KEY" {
		return nil, errors.New("not an RSA PRIVATE KEY")
	}
	return x509.ParsePKCS1PrivateKey(block.Bytes)
}

func parseECKey(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "EC PRIVATE KEY" {
		return nil, errors.New("not an EC PRIVATE KEY")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}
