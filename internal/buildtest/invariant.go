package buildtest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/outdir"
	"github.com/pibake/pibake/internal/files"
)

// CheckInvariant checks an output directory's invariant, with the real
// sha256sum and against the files themselves, and returns its manifest:
//   - no temporary name is left (parts, atomic writes) and no journal;
//   - every file SHA256SUMS lists exists with its checksum
//     (`sha256sum --strict -c`), and SHA256SUMS lists exactly the images
//     and .img.xz files manifest.json names; with no node there is no
//     SHA256SUMS at all (an empty one fails sha256sum -c);
//   - every image, .img.xz, SBOM and record under a final name is
//     listed (SHA256SUMS lists the SBOMs, and delta.json and
//     provenance.json while manifest.json's records name them); every
//     node has its .bmap and a state; os_list.json offers the listed
//     nodes;
//   - a signature is there only with its file, and, where the directory's
//     parent holds an allowed_signers file (for Principal), ssh-keygen
//     -Y verify accepts it.
func CheckInvariant(t testing.TB, dir string) outdir.Manifest {
	t.Helper()
	for _, pattern := range []string{"*.part", ".*.tmp-*", ".pibake/.*.tmp-*", ".pibake/publishing*.json"} {
		if left, _ := filepath.Glob(filepath.Join(dir, pattern)); len(left) != 0 {
			t.Errorf("left behind: %v", left)
		}
	}
	m := outdir.ReadManifest(dir)
	var want []string
	for _, n := range m.Nodes {
		want = append(want, n.File)
		if n.BmapSHA256 != "" {
			want = append(want, n.Bmap)
		}
		if n.XZ != "" {
			want = append(want, n.XZ)
		}
		if n.SBOM != "" {
			want = append(want, n.SBOM)
		}
		if !files.Exists(filepath.Join(dir, n.Bmap)) {
			t.Errorf("%s: its block map %s is missing", n.Hostname, n.Bmap)
		}
		if n.State == "" {
			t.Errorf("manifest entry %s has no state", n.Hostname)
		}
	}
	if len(m.Nodes) > 0 {
		for _, r := range m.Records {
			want = append(want, r.Name)
		}
	}
	listed := checkSums(t, dir, len(m.Nodes) > 0)
	sort.Strings(want)
	if !slices.Equal(listed, want) {
		t.Errorf("SHA256SUMS lists %v; manifest.json names %v", listed, want)
	}
	for _, pattern := range []string{"*.img", "*.img.xz", "*.cdx.json", outdir.DeltaFile, outdir.ProvenanceFile} {
		found, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, f := range found {
			if !slices.Contains(listed, filepath.Base(f)) {
				t.Errorf("%s is under a final name but not in SHA256SUMS", filepath.Base(f))
			}
		}
	}
	checkSignatures(t, dir)
	checkOSList(t, dir, m)
	return m
}

// checkSignatures checks that a signature is there only with its file,
// and, when a key is on record (SignedBy), that ssh-keygen accepts it: a
// file rewritten after it was signed has lost its signature.
func checkSignatures(t testing.TB, dir string) {
	t.Helper()
	for _, name := range outdir.Signed {
		sig := filepath.Join(dir, name+outdir.SigSuffix)
		if !files.Exists(sig) {
			continue
		}
		if !files.Exists(filepath.Join(dir, name)) {
			t.Errorf("%s is there without %s", filepath.Base(sig), name)
			continue
		}
		allowed := filepath.Join(dir, "..", "allowed_signers")
		if !files.Exists(allowed) {
			continue
		}
		in, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", Principal, "-n", "pibake", "-s", sig)
		cmd.Stdin = in
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("ssh-keygen -Y verify %s: %v\n%s", filepath.Base(sig), err, out)
		}
		in.Close()
	}
}

// checkSums runs sha256sum -c on SHA256SUMS, which must be there exactly
// when nodes are, and returns the names it lists, sorted.
func checkSums(t testing.TB, dir string, nodes bool) []string {
	t.Helper()
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	switch {
	case err != nil && nodes:
		t.Errorf("SHA256SUMS: %v", err)
		return nil
	case err == nil && !nodes:
		t.Errorf("SHA256SUMS is there with no node listed (%q); an empty set holds none", sums)
	case err != nil:
		return nil
	}
	cmd := exec.Command("sha256sum", "--strict", "-c", "SHA256SUMS")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c SHA256SUMS: %v\n%s", err, out)
	}
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			listed = append(listed, f[1])
		}
	}
	sort.Strings(listed)
	return listed
}

// checkOSList checks that os_list.json offers exactly the listed nodes.
func checkOSList(t testing.TB, dir string, m outdir.Manifest) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, outdir.OSListFile))
	if err != nil {
		if len(m.Nodes) > 0 {
			t.Errorf("os_list.json: %v", err)
		}
		return
	}
	var list struct {
		OSList []struct{ Name string } `json:"os_list"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Errorf("os_list.json: %v", err)
		return
	}
	var got, want []string
	for _, e := range list.OSList {
		got = append(got, e.Name)
	}
	for _, n := range m.Nodes {
		want = append(want, n.Hostname)
	}
	if !slices.Equal(got, want) {
		t.Errorf("os_list.json offers %v; manifest.json lists %v", got, want)
	}
}

// States is "host=state …" for every node of m, sorted.
func States(m outdir.Manifest) string {
	var s []string
	for _, n := range m.Nodes {
		s = append(s, n.Hostname+"="+n.State)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}
