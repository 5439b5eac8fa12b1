package outdir

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pibake/pibake/builder/identity"
	"github.com/pibake/pibake/recipes"
)

// TestSettleCARefuses: a CA that is missing, incomplete, replaced or new
// to a directory of images built without one is refused, never silently
// made again; --new-cluster replaces it on purpose.
func TestSettleCARefuses(t *testing.T) {
	settle := func(t *testing.T, dir string, newCluster bool, m Manifest) (*identity.CA, error) {
		t.Helper()
		d, err := Open(context.Background(), dir, Options{Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		d.m = m
		return d.ClusterCA(recipes.CAGenerate, newCluster, time.Now())
	}
	dir := t.TempDir()
	ca, err := settle(t, dir, false, Manifest{})
	if err != nil {
		t.Fatal(err)
	}
	first := ca.Hash()
	built := Manifest{CAHash: first, Nodes: []Node{{Hostname: "srv"}}}
	if ca, err = settle(t, dir, false, built); err != nil || ca.Hash() != first {
		t.Fatalf("second settle: %v (hash %s, want %s)", err, ca.Hash(), first)
	}

	for _, tc := range []struct {
		name  string
		setup func(dir string)
		m     Manifest
		want  string
	}{
		{"incomplete", func(dir string) { os.Remove(filepath.Join(dir, ".pibake/ca/client-ca.key")) }, built, "lacks client-ca.key"},
		{"missing", func(dir string) { os.RemoveAll(filepath.Join(dir, ".pibake/ca")) }, built, "is missing, but this directory holds images that pin"},
		{"built without a CA", func(dir string) { os.RemoveAll(filepath.Join(dir, ".pibake/ca")) }, Manifest{Nodes: []Node{{Hostname: "srv"}}}, `built without a generated CA`},
		{"replaced", func(dir string) {}, Manifest{CAHash: strings.Repeat("0", 64), Nodes: built.Nodes}, "is not the one this directory's images pin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each makes a CA (two RSA 4096 keys) in a copy of its own
			d := t.TempDir()
			if out, err := exec.Command("cp", "-a", dir+"/.", d).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v\n%s", err, out)
			}
			os.Remove(filepath.Join(d, lockFile))
			tc.setup(d)
			_, err := settle(t, d, false, tc.m)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--new-cluster") {
				t.Fatalf("settleCA: %v; want %q and the way out", err, tc.want)
			}
			if tc.name != "incomplete" && !errors.Is(err, ErrNewCluster) {
				t.Errorf("%v is not ErrNewCluster", err)
			}
			ca, err := settle(t, d, true, tc.m)
			if err != nil || ca.Hash() == first {
				t.Errorf("--new-cluster: %v (a new CA: %v)", err, err == nil && ca.Hash() != first)
			}
		})
	}
}

// TestNewClusterInterrupted: --new-cluster sets the old CA aside until
// the new one exists. Killed in between, the next build puts the old one
// back; killed after, it removes the old one. Either way the directory
// ends with exactly one complete CA.
func TestNewClusterInterrupted(t *testing.T) {
	settle := func(dir string, newCluster bool) *identity.CA {
		t.Helper()
		d, err := Open(context.Background(), dir, Options{Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ca, err := d.ClusterCA(recipes.CAGenerate, newCluster, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	dir := t.TempDir()
	ca, replaced := filepath.Join(dir, ".pibake/ca"), filepath.Join(dir, ".pibake/ca.replaced")
	first := settle(dir, false).Hash()

	// Killed after setting the old CA aside, before the new one existed.
	if err := os.Rename(ca, replaced); err != nil {
		t.Fatal(err)
	}
	if got := settle(dir, false).Hash(); got != first {
		t.Errorf("after a replacement killed half-way: CA %s, want the old one %s back", got, first)
	}
	if _, err := os.Lstat(replaced); err == nil {
		t.Errorf("%s is still there", replaced)
	}

	// Killed after the new CA was made, before the old one was removed.
	second := settle(dir, true).Hash()
	if second == first {
		t.Fatal("--new-cluster kept the old CA")
	}
	if _, err := os.Lstat(replaced); err == nil {
		t.Fatalf("%s is left after --new-cluster", replaced)
	}
	if out, err := exec.Command("cp", "-a", ca, replaced).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	if got := settle(dir, false).Hash(); got != second {
		t.Errorf("after a replacement killed at its end: CA %s, want the new one %s", got, second)
	}
	if _, err := os.Lstat(replaced); err == nil {
		t.Errorf("%s is still there", replaced)
	}
}

// TestSweepIdentityLeftovers: a build killed while it made the CA, or
// renewed the admin certificate, leaves temporary names that the next
// one removes; the CA itself stays.
func TestSweepIdentityLeftovers(t *testing.T) {
	dir := t.TempDir()
	left := []string{".pibake/.ca.tmp-123/etcd/peer-ca.key", ".pibake/ca/.admin.key.tmp-456", ".pibake/ca/etcd/.peer-ca.crt.tmp-789"}
	keep := ".pibake/ca/server-ca.crt"
	for _, rel := range append(left, keep) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, []byte("x"), 0o600)
	}
	openTest(t, dir)
	for _, rel := range left {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rel))); err == nil {
			t.Errorf("%s survived the sweep", rel)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".pibake/.ca.tmp-123")); err == nil {
		t.Error("the half-made CA directory survived the sweep")
	}
	if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(keep))); err != nil {
		t.Errorf("the sweep removed the CA: %v", err)
	}
}
