package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/internal/testimage"
)

func randReader() io.Reader { return rand.Reader }

func pemBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM block")
	}
	return block.Bytes
}

func caTemplate(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	return &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: NotBefore, NotAfter: now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
	}
}

// adminCA is a copy of the shared CA with an admin certificate.
func adminCA(t *testing.T) *CA {
	t.Helper()
	ca, err := Load(copyCA(t), now)
	if err != nil {
		t.Fatal(err)
	}
	made, err := ca.EnsureAdmin(now)
	if err != nil || !made {
		t.Fatalf("EnsureAdmin = %v, %v; want a new certificate", made, err)
	}
	return ca
}

// TestAdminCertificate: the identity k3s's own admin kubeconfig carries,
// signed by the client CA, as Go and openssl see it.
func TestAdminCertificate(t *testing.T) {
	ca := adminCA(t)
	certs := mustCerts(t, ca.files[adminCert])
	if len(certs) != 4 {
		t.Fatalf("admin.crt has %d certificates; want the leaf and the client CA bundle", len(certs))
	}
	c := certs[0]
	if c.Subject.CommonName != "system:admin" || !slices.Equal(c.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("subject %v; want CN=system:admin, O=system:masters", c.Subject)
	}
	if c.IsCA || !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("IsCA %v, EKU %v; want a client certificate", c.IsCA, c.ExtKeyUsage)
	}
	if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("admin key is %T; want EC P-256 as k3s makes it", c.PublicKey)
	}
	if want := now.AddDate(0, 0, adminDays).Truncate(time.Second); !c.NotAfter.Equal(want) {
		t.Errorf("NotAfter %v, want %v", c.NotAfter, want)
	}
	// kube-apiserver trusts every certificate in client-ca.crt.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.files["client-ca.crt"])
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: now}); err != nil {
		t.Errorf("the admin certificate does not verify against client-ca.crt: %v", err)
	}
	server := x509.NewCertPool()
	server.AppendCertsFromPEM(mustPEM(t, ca.files["server-ca.crt"], 0))
	if _, err := c.Verify(x509.VerifyOptions{Roots: server, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: now}); err == nil {
		t.Error("the admin certificate verifies against the server CA alone; the check above proves nothing")
	}

	openssl := testimage.Tool(t, "openssl")
	tmp := t.TempDir()
	untrusted := filepath.Join(tmp, "chain.pem")
	os.WriteFile(untrusted, append(mustPEM(t, ca.files["client-ca.crt"], 0), mustPEM(t, ca.files["client-ca.crt"], 1)...), 0o600)
	out, err := exec.Command(openssl, "verify", "-purpose", "sslclient", "-CAfile", filepath.Join(ca.Dir(), rootCert),
		"-untrusted", untrusted, filepath.Join(ca.Dir(), adminCert)).CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), ": OK") {
		t.Errorf("openssl verify admin.crt: %v\n%s", err, out)
	}
}

// TestEnsureAdminRenews: kept while it has more than AdminRenewDays left,
// renewed after, and remade when its files no longer match.
func TestEnsureAdminRenews(t *testing.T) {
	ca := adminCA(t)
	first := ca.AdminExpires()
	again, err := Load(ca.Dir(), now.AddDate(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if made, err := again.EnsureAdmin(now.AddDate(0, 1, 0)); made || err != nil {
		t.Errorf("a month later EnsureAdmin = %v, %v; want the kept certificate", made, err)
	}
	later := now.AddDate(0, 0, adminDays-AdminRenewDays+1)
	again, err = Load(ca.Dir(), later)
	if err != nil {
		t.Fatal(err)
	}
	if made, err := again.EnsureAdmin(later); !made || err != nil || !again.AdminExpires().After(first) {
		t.Errorf("near expiry EnsureAdmin = %v, %v (expires %v); want a renewed certificate", made, err, again.AdminExpires())
	}
	// Near the client CA's end the admin certificate ends with it, and is
	// not made again at every build for that.
	caEnd := again.clientCAExpires()
	nearEnd := caEnd.AddDate(0, 0, -30)
	again, err = Load(ca.Dir(), nearEnd)
	if err != nil {
		t.Fatal(err)
	}
	if made, err := again.EnsureAdmin(nearEnd); !made || err != nil || !again.AdminExpires().Equal(caEnd) {
		t.Errorf("30 days before the client CA ends (%v): EnsureAdmin = %v, %v, expires %v; want a new certificate ending with the CA", caEnd, made, err, again.AdminExpires())
	}
	if made, err := again.EnsureAdmin(nearEnd.AddDate(0, 0, 1)); made || err != nil {
		t.Errorf("a day later: EnsureAdmin = %v, %v; want the kept certificate, which can last no longer", made, err)
	}
	// A crash between writing the key and the certificate.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kp, _ := ecKeyPEM(k)
	os.WriteFile(filepath.Join(ca.Dir(), adminKey), kp, 0o600)
	again, err = Load(ca.Dir(), now)
	if err != nil {
		t.Fatal(err)
	}
	if !again.AdminExpires().IsZero() {
		t.Error("a mismatched admin pair was taken as valid")
	}
	if made, err := again.EnsureAdmin(now); !made || err != nil {
		t.Errorf("EnsureAdmin after a torn write = %v, %v", made, err)
	}
}

// TestKubectlTalksToAModelAPIServer: kubectl, with the kubeconfig pibake
// writes, reaches a TLS server set up as k3s sets up kube-apiserver:
// serving certificate signed by the server CA, client certificates
// verified against client-ca.crt, and the request's user and group read
// from the certificate.
func TestKubectlTalksToAModelAPIServer(t *testing.T) {
	kubectl := testimage.Tool(t, "kubectl")
	ca := adminCA(t)
	srv := modelAPIServer(t, ca)
	kc := filepath.Join(t.TempDir(), "lab.kubeconfig")
	b, err := ca.Kubeconfig("lab", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kc, b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "HOME="+t.TempDir(), "KUBECONFIG=")
	view := exec.Command(kubectl, "--kubeconfig", kc, "config", "view", "-o", "jsonpath={.current-context} {.clusters[0].cluster.server} {.users[0].name}")
	view.Env = env
	out, err := view.CombinedOutput()
	if err != nil || string(out) != "lab "+srv.URL+" lab-admin" {
		t.Errorf("kubectl config view: %v: %q", err, out)
	}
	// k3s's kubeconfig trusts the server CA bundle exactly.
	raw := exec.Command(kubectl, "--kubeconfig", kc, "config", "view", "--raw", "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}")
	raw.Env = env
	out, err = raw.Output()
	if data, derr := base64.StdEncoding.DecodeString(string(out)); err != nil || derr != nil || string(data) != string(ca.files["server-ca.crt"]) {
		t.Errorf("certificate-authority-data is not server-ca.crt (%v, %v)", err, derr)
	}
	get := exec.Command(kubectl, "--kubeconfig", kc, "get", "--raw", "/version")
	get.Env = env
	out, err = get.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"user":"system:admin"`) {
		t.Errorf("kubectl get --raw /version: %v\n%s", err, out)
	}

	// The same kubeconfig against a server of another cluster CA must
	// fail, or the test above proves nothing.
	other, err := Load(copyCA(t), now)
	if err != nil {
		t.Fatal(err)
	}
	other.files["server-ca.crt"] = selfSigned(t)
	b64 := base64.StdEncoding.EncodeToString
	wrong := strings.Replace(string(b), b64(ca.files["server-ca.crt"]), b64(other.files["server-ca.crt"]), 1)
	os.WriteFile(kc, []byte(wrong), 0o600)
	get = exec.Command(kubectl, "--kubeconfig", kc, "get", "--raw", "/version")
	get.Env = env
	if out, err := get.CombinedOutput(); err == nil {
		t.Errorf("kubectl trusted a server of another CA:\n%s", out)
	}
}

// modelAPIServer serves /version over TLS the way kube-apiserver is set up
// by k3s: its certificate from the server CA (first certificate of
// server-ca.crt, signed with server-ca.key), client certificates required
// and verified against every certificate in client-ca.crt.
func modelAPIServer(t *testing.T, ca *CA) *httptest.Server {
	t.Helper()
	caCert := mustCerts(t, ca.files["server-ca.crt"])[0]
	caKey, err := parseECKey(ca.files["server-ca.key"])
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:    []string{"kubernetes", "localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	clients := x509.NewCertPool()
	clients.AppendCertsFromPEM(ca.files["client-ca.crt"])
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.TLS.PeerCertificates[0]
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"gitVersion":"v1.31.4+k3s1","user":"`+c.Subject.CommonName+`","groups":"`+strings.Join(c.Subject.Organization, ",")+`"}`)
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der, caCert.Raw}, PrivateKey: k}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clients,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func selfSigned(t *testing.T) []byte {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, caTemplate(t, "other"), caTemplate(t, "other"), k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// mustPEM returns the i-th PEM block of b, encoded.
func mustPEM(t *testing.T, b []byte, i int) []byte {
	t.Helper()
	for n := 0; ; n++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			t.Fatalf("no PEM block %d", i)
		}
		if n == i {
			return pem.EncodeToMemory(block)
		}
	}
}
