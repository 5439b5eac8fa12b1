package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pibake/pibake/internal/atomicfile"
)

// The admin identity k3s's authorizer accepts: k3s makes its own admin
// certificate as CN system:admin in group system:masters (the Kubernetes
// superuser group), an EC P-256 key, extended key usage clientAuth, signed
// by the client CA (pkg/daemons/control/deps/deps.go, genClientCerts,
// "system:admin", user.SystemPrivilegedGroup).
const (
	adminCN    = "system:admin"
	adminGroup = "system:masters"
)

// loadAdmin reads the admin certificate kept with the CA, or says why it
// cannot be used.
func (ca *CA) loadAdmin() (*x509.Certificate, error) {
	crt, err := readFile(ca.dir, adminCert)
	if err != nil {
		return nil, err
	}
	key, err := readFile(ca.dir, adminKey)
	if err != nil {
		return nil, err
	}
	if _, err := tls.X509KeyPair(crt, key); err != nil {
		return nil, err
	}
	c, err := parseCert(crt)
	if err != nil {
		return nil, err
	}
	client, err := parseCerts(ca.files["client-ca.crt"])
	if err != nil {
		return nil, err
	}
	if err := c.CheckSignatureFrom(client[0]); err != nil {
		return nil, errors.New("not signed by this cluster's client CA")
	}
	ca.files[adminCert], ca.files[adminKey] = crt, key
	return c, nil
}

// AdminExpires is when the admin certificate expires; zero when there is
// none yet.
func (ca *CA) AdminExpires() time.Time {
	if ca.admin == nil {
		return time.Time{}
	}
	return ca.admin.NotAfter
}

// EnsureAdmin makes the admin client certificate when there is none, or
// when the one kept expires within AdminRenewDays of now, and reports
// whether it made one. The key and certificate are written atomically one
// after the other; a crash between the two leaves a pair that does not
// match, which the next build replaces.
func (ca *CA) EnsureAdmin(now time.Time) (bool, error) {
	if ca.admin != nil && (now.AddDate(0, 0, AdminRenewDays).Before(ca.admin.NotAfter) || !ca.admin.NotAfter.Before(ca.clientCAExpires())) {
		return false, nil // not near its end, or already ending with its CA
	}
	crt, key, err := ca.signAdmin(now)
	if err != nil {
		return false, fmt.Errorf("admin certificate: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(ca.dir, adminKey), key, 0o600); err != nil {
		return false, fmt.Errorf("admin certificate: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(ca.dir, adminCert), crt, 0o600); err != nil {
		return false, fmt.Errorf("admin certificate: %w", err)
	}
	if ca.admin, err = ca.loadAdmin(); err != nil {
		return false, fmt.Errorf("admin certificate: %w", err)
	}
	return true, nil
}

// signAdmin issues the admin certificate: the leaf, then the client CA
// bundle, as k3s writes client-admin.crt.
func (ca *CA) signAdmin(now time.Time) (crt, key []byte, err error) {
	client, err := parseCerts(ca.files["client-ca.crt"])
	if err != nil {
		return nil, nil, err
	}
	clientKey, err := parseECKey(ca.files["client-ca.key"])
	if err != nil {
		return nil, nil, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: adminCN, Organization: []string{adminGroup}},
		// The API server checks the certificate at its own time, which on
		// a Pi without network time can lag the build machine's.
		NotBefore: NotBefore,
		// Never past the CA that signs it: a certificate outliving its
		// issuer does not verify after the issuer's end anyway.
		NotAfter:    minTime(now.AddDate(0, 0, adminDays), client[0].NotAfter),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, client[0], k.Public(), clientKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if key, err = ecKeyPEM(k); err != nil {
		return nil, nil, err
	}
	return append(certPEM(c), ca.files["client-ca.crt"]...), key, nil
}

// clientCAExpires is when the client CA, the admin certificate's issuer,
// expires; zero when it cannot be read (Load has checked it).
func (ca *CA) clientCAExpires() time.Time {
	client, err := parseCerts(ca.files["client-ca.crt"])
	if err != nil {
		return time.Time{}
	}
	return client[0].NotAfter
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Kubeconfig renders the admin kubeconfig for a cluster reached at
// serverURL, shaped as k3s writes /etc/rancher/k3s/k3s.yaml
// (pkg/clientaccess/kubeconfig.go, WriteClientKubeConfig): the server CA
// bundle as certificate-authority-data, the admin certificate and key
// embedded. Its cluster, user and context are named after the cluster
// rather than k3s's "default", so that it merges with other kubeconfigs.
// It holds the admin key: the caller writes it 0600.
func (ca *CA) Kubeconfig(cluster, serverURL string) ([]byte, error) {
	if ca.admin == nil {
		return nil, errors.New("no admin certificate: call EnsureAdmin first")
	}
	b64 := func(name string) string { return base64.StdEncoding.EncodeToString(ca.files[name]) }
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by pibake: cluster-admin access to k3s cluster %[1]s. Keep it secret.
# The client certificate expires %[5]s; pibake build renews it.
apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: %[2]q
    certificate-authority-data: %[3]s
users:
- name: %[1]s-admin
  user:
    client-certificate-data: %[4]s
    client-key-data: %[6]s
contexts:
- name: %[1]s
  context:
    cluster: %[1]s
    user: %[1]s-admin
current-context: %[1]s
preferences: {}
`, cluster, serverURL, b64("server-ca.crt"), b64(adminCert), ca.admin.NotAfter.UTC().Format(time.DateOnly), b64(adminKey))
	return []byte(b.String()), nil
}

func readFile(dir, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
}
