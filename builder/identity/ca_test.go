package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pibake/pibake/internal/testimage"
)

// now is the build time the tests make CAs at.
var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// sharedCA is made once: two RSA-4096 keys take seconds. Tests that
// change a CA copy its directory first.
var sharedCA = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "pibake-ca-*")
	if err != nil {
		return "", err
	}
	_, err = Create(filepath.Join(dir, "ca"), now)
	return filepath.Join(dir, "ca"), err
})

func testCA(t *testing.T) *CA {
	t.Helper()
	dir, err := sharedCA()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := Load(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// copyCA gives a test its own copy of the shared CA to change.
func copyCA(t *testing.T) string {
	t.Helper()
	src, err := sharedCA()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "ca")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return dst
}

func TestMain(m *testing.M) {
	code := m.Run()
	if dir, err := sharedCA(); err == nil {
		os.RemoveAll(filepath.Dir(dir))
	}
	os.Exit(code)
}

// TestK3sFiles: exactly the files docs/cli/certificate.md lists as
// required ("The following files are required"), no more: the root and
// intermediate keys stay off the cluster.
func TestK3sFiles(t *testing.T) {
	want := []string{
		"client-ca.crt", "client-ca.key", "etcd/peer-ca.crt", "etcd/peer-ca.key",
		"etcd/server-ca.crt", "etcd/server-ca.key", "request-header-ca.crt", "request-header-ca.key",
		"server-ca.crt", "server-ca.key", "service.key",
	}
	got := K3sFiles()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("K3sFiles = %v\nwant %v", got, want)
	}
}

// TestCreateStoresPrivately: a 0700 directory of 0600 files, every one
// k3s needs plus the root, intermediate and admin pairs.
func TestCreateStoresPrivately(t *testing.T) {
	src := copyCA(t)
	ca, err := Load(src, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.EnsureAdmin(now); err != nil {
		t.Fatal(err)
	}
	var got []string
	err = filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want := os.FileMode(0o600)
		if d.IsDir() {
			want = 0o700 | os.ModeDir
		} else {
			got = append(got, filepath.ToSlash(rel))
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := append(storedFiles(), adminCert, adminKey)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("stored files %v\nwant %v", got, want)
	}
	if _, err := Create(src, now); err == nil {
		t.Error("Create over an existing CA succeeded; it must never replace one")
	}
}

// TestCAShape checks every certificate against what
// generate-custom-ca-certs.sh makes and what k3s's verification needs.
func TestCAShape(t *testing.T) {
	ca := testCA(t)
	root := mustCerts(t, ca.files[rootCert])
	inter := mustCerts(t, ca.files[intermediateCert])
	if len(root) != 1 || len(inter) != 2 || !inter[1].Equal(root[0]) {
		t.Fatalf("root-ca.crt has %d certificates, intermediate-ca.crt %d (want 1, and 2 ending in the root)", len(root), len(inter))
	}
	checkCA := func(name string, c *x509.Certificate, bits int, days int) {
		t.Helper()
		if !c.IsCA || !c.BasicConstraintsValid {
			t.Errorf("%s: not a CA", name)
		}
		if c.MaxPathLen > 0 || c.MaxPathLenZero {
			t.Errorf("%s: has a path length constraint", name)
		}
		if len(c.ExtKeyUsage) > 0 || len(c.UnknownExtKeyUsage) > 0 {
			t.Errorf("%s: has extended key usages %v; k3s's chain verification (default usage serverAuth) would fail", name, c.ExtKeyUsage)
		}
		wantKU := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign
		if c.KeyUsage != wantKU {
			t.Errorf("%s: key usage %b, want %b", name, c.KeyUsage, wantKU)
		}
		if len(c.SubjectKeyId) == 0 {
			t.Errorf("%s: no subject key id", name)
		}
		if !c.NotBefore.Equal(NotBefore) {
			t.Errorf("%s: NotBefore %v, want %v", name, c.NotBefore, NotBefore)
		}
		if want := now.AddDate(0, 0, days); !c.NotAfter.Equal(want.Truncate(time.Second)) {
			t.Errorf("%s: NotAfter %v, want %v", name, c.NotAfter, want)
		}
		switch k := c.PublicKey.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() != bits {
				t.Errorf("%s: RSA-%d, want %d", name, k.N.BitLen(), bits)
			}
		case *ecdsa.PublicKey:
			if bits != 256 || k.Curve != elliptic.P256() {
				t.Errorf("%s: EC %s, want %d bits", name, k.Curve.Params().Name, bits)
			}
		default:
			t.Errorf("%s: a %T key, want RSA or EC", name, k)
		}
		if c.SignatureAlgorithm != x509.SHA256WithRSA && c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("%s: signed with %v", name, c.SignatureAlgorithm)
		}
	}
	checkCA("root", root[0], 4096, rootDays)
	checkCA("intermediate", inter[0], 4096, caDays)
	if len(root[0].AuthorityKeyId) != 0 && !bytes.Equal(root[0].AuthorityKeyId, root[0].SubjectKeyId) {
		t.Error("the root's authority key id is another key's: k3s would not take it for a root")
	}
	if !bytes.Equal(inter[0].AuthorityKeyId, root[0].SubjectKeyId) {
		t.Error("the intermediate's authority key id is not the root's subject key id")
	}
	for _, name := range caNames {
		certs := mustCerts(t, ca.files[name+".crt"])
		if len(certs) != 3 || !certs[1].Equal(inter[0]) || !certs[2].Equal(root[0]) {
			t.Errorf("%s.crt: want the CA, the intermediate, the root", name)
			continue
		}
		checkCA(name, certs[0], 256, caDays)
		// As the upstream script names them: k3s-<name>@<unix time>.
		if want := fmt.Sprintf("k3s-%s@%d", strings.ReplaceAll(name, "/", "-"), now.Unix()); certs[0].Subject.CommonName != want {
			t.Errorf("%s: CN %q, want %q", name, certs[0].Subject.CommonName, want)
		}
		if !bytes.Equal(certs[0].AuthorityKeyId, inter[0].SubjectKeyId) {
			t.Errorf("%s: authority key id is not the intermediate's", name)
		}
		if !strings.HasPrefix(string(ca.files[name+".key"]), "-----BEGIN EC PRIVATE KEY-----\n") {
			t.Errorf("%s.key is not an EC PRIVATE KEY", name)
		}
	}
	sk, err := parseRSAKey(ca.files[ServiceKey])
	if err != nil || sk.N.BitLen() != 2048 {
		t.Errorf("service.key: want RSA-2048 PKCS#1, got err %v", err)
	}
}

// TestOpenSSLVerifies: openssl, not Go, checks every CA chains to the
// root, and computes the root's DER hash independently.
func TestOpenSSLVerifies(t *testing.T) {
	openssl := testimage.Tool(t, "openssl")
	ca := testCA(t)
	dir := ca.Dir()
	untrusted := filepath.Join(t.TempDir(), "intermediate.pem")
	if err := os.WriteFile(untrusted, ca.files[intermediateCert][:bytes.Index(ca.files[intermediateCert], []byte("-----END CERTIFICATE-----"))+26], 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range caNames {
		// openssl verify checks the first certificate of the file.
		out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, rootCert), "-untrusted", untrusted,
			"-attime", "1700000000", filepath.Join(dir, filepath.FromSlash(name)+".crt")).CombinedOutput()
		if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), ": OK") {
			t.Errorf("openssl verify %s.crt: %v\n%s", name, err, out)
		}
	}
	der, err := exec.Command(openssl, "x509", "-in", filepath.Join(dir, rootCert), "-outform", "DER").Output()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	if got, want := ca.Hash(), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("CA hash %s; openssl's root DER hashes to %s", got, want)
	}

	// A certificate from elsewhere must fail, or the check above proves
	// nothing.
	other := filepath.Join(t.TempDir(), "other.crt")
	if out, err := exec.Command(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", other+".key", "-subj", "/CN=other", "-out", other).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	if out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, rootCert), "-untrusted", untrusted, other).CombinedOutput(); err == nil {
		t.Errorf("openssl verified a foreign certificate against the cluster root:\n%s", out)
	}
}

// k3sHashCA is k3s's hashCA (pkg/clientaccess/token.go), rewritten here
// as the stand-in a joining node runs on what /cacerts returns: it
// silently falls back to the raw bytes when the chain does not verify.
func k3sHashCA(t *testing.T, b []byte, at time.Time) string {
	t.Helper()
	certs := mustCerts(t, b)
	if len(certs) > 1 {
		roots, inters := x509.NewCertPool(), x509.NewCertPool()
		for _, c := range certs[1:] {
			if len(c.AuthorityKeyId) == 0 || bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId) {
				roots.AddCert(c)
			} else {
				inters.AddCert(c)
			}
		}
		if chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: at}); err == nil {
			b = chains[0][len(chains[0])-1].Raw
		}
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestHashAsK3sComputesIt: the hash pinned in tokens is what a joining
// node computes from server-ca.crt, at any clock a Pi may boot with, and
// the stand-in does fail the way k3s does when the chain cannot verify.
func TestHashAsK3sComputesIt(t *testing.T) {
	ca := testCA(t)
	bundle := ca.files["server-ca.crt"]
	for _, at := range []time.Time{NotBefore.Add(time.Hour), time.Date(2023, 10, 10, 0, 0, 0, 0, time.UTC), now, now.AddDate(5, 0, 0)} {
		if got := k3sHashCA(t, bundle, at); got != ca.Hash() {
			t.Errorf("at %v k3s computes %s, the tokens pin %s", at, got, ca.Hash())
		}
	}
	raw := sha256.Sum256(bundle)
	if got := k3sHashCA(t, bundle, NotBefore.Add(-time.Hour)); got != hex.EncodeToString(raw[:]) {
		t.Error("the k3s stand-in did not fall back to the raw bytes for a clock before NotBefore")
	}
	if _, err := BundleHash(bundle, NotBefore.Add(-time.Hour)); err == nil {
		t.Error("BundleHash accepted a chain that does not verify at the time given")
	}
	if _, err := BundleHash(ca.files[rootCert], now); err == nil {
		t.Error("BundleHash accepted a single certificate, which k3s hashes by its bytes")
	}
}

// TestEKUBreaksTheHash models the failure the no-EKU rule avoids: a CA
// with an extended key usage lacking serverAuth makes k3s hash raw bytes.
func TestEKUBreaksTheHash(t *testing.T) {
	ca := testCA(t)
	inter := mustCerts(t, ca.files[intermediateCert])[0]
	interKey, err := x509.ParsePKCS1PrivateKey(pemBytes(t, ca.files[intermediateKey]))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), randReader())
	tmpl := caTemplate(t, "eku-ca")
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(randReader(), tmpl, inter, k.Public(), interKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	bundle := append(certPEM(c), ca.files[intermediateCert]...)
	if k3sHashCA(t, bundle, now) == ca.Hash() {
		t.Error("a CA with an EKU lacking serverAuth still hashed to the root: the model does not reproduce k3s")
	}
	if _, err := BundleHash(bundle, now); err == nil {
		t.Error("BundleHash accepted a bundle k3s would hash by its raw bytes")
	}
}

// TestLoadRefuses: an incomplete or inconsistent CA directory is an
// error that names what is wrong, never silently repaired.
func TestLoadRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, dir string)
		want   string
	}{
		{"missing key", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "etcd/peer-ca.key")) }, "lacks etcd/peer-ca.key"},
		{"missing service key", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, ServiceKey)) }, "lacks service.key"},
		{"swapped key", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "client-ca.key"))
			os.WriteFile(filepath.Join(dir, "server-ca.key"), b, 0o600)
		}, "server-ca.crt and server-ca.key"},
		{"truncated bundle", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "server-ca.crt"))
			os.WriteFile(filepath.Join(dir, "server-ca.crt"), b[:bytes.Index(b, []byte("-----END CERTIFICATE-----"))+26], 0o600)
		}, "is not the CA followed by"},
		{"not PEM", func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, rootCert), []byte("junk\n"), 0o600) }, "root-ca.crt: no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyCA(t)
			tc.break_(t, dir)
			_, err := Load(dir, now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v; want an error containing %q", err, tc.want)
			}
			if strings.HasPrefix(tc.name, "missing") && !errors.Is(err, ErrIncomplete) {
				t.Errorf("Load: %v is not ErrIncomplete", err)
			}
		})
	}
}

// TestLoadExpired: a CA past its end is refused.
func TestLoadExpired(t *testing.T) {
	ca := testCA(t)
	_, err := Load(ca.Dir(), now.AddDate(0, 0, caDays+1))
	if err == nil || !strings.Contains(err.Error(), "expired on "+now.AddDate(0, 0, caDays).Format(time.DateOnly)) {
		t.Fatalf("Load after expiry: %v", err)
	}
}

func mustCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	certs, err := parseCerts(b)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}
