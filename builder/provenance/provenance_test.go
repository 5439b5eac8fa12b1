package provenance

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/golden"
	"github.com/pibake/pibake/internal/testimage"
)

func sum(c byte) string { return strings.Repeat(string(c), 64) }

func sample() Input {
	return Input{
		PibakeVersion: "v0.9.0", GoVersion: "go1.26.8", Cluster: "lab",
		Recipe: "recipes/examples/ha.hcl", RecipeHash: sum('0'),
		Lock:       &Artifact{Name: "ha.hcl.lock", SHA256: sum('1')},
		Base:       Artifact{URI: "https://downloads.raspberrypi.com/raspios_lite_arm64/images/raspios_lite_arm64-2025-11-24/2025-11-24-raspios-trixie-arm64-lite.img.xz", SHA256: sum('a')},
		BaseSource: "raspios_lite_arm64:latest", BaseRawSHA256: sum('b'), BaseReleased: "2025-11-24",
		K3sVersion: "v1.33.5+k3s1", K3sChannel: "stable",
		InstallScript: &Artifact{URI: "https://get.k3s.io"},
		Airgap:        []Artifact{{Name: "k3s-arm64", SHA256: sum('c')}, {Name: "install.sh", SHA256: sum('d')}},
		Options:       map[string]any{"compress": true, "image": ""},
		Subjects: []Artifact{
			{Name: "pi-server.img", SHA256: sum('2')}, {Name: "pi-agent.img", SHA256: sum('3')},
			{Name: "pi-server.img.bmap", SHA256: sum('4')}, {Name: "pi-server.cdx.json", SHA256: sum('5')},
		},
	}
}

func TestBuildGolden(t *testing.T) {
	b, err := Build(sample())
	if err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "testdata/provenance.json.golden", b)
}

// TestDeterministic: subjects and air-gap files in another order (as the
// shards of a merge list them) give the same bytes.
func TestDeterministic(t *testing.T) {
	a, err := Build(sample())
	if err != nil {
		t.Fatal(err)
	}
	in := sample()
	s := in.Subjects
	s[0], s[3] = s[3], s[0]
	in.Airgap[0], in.Airgap[1] = in.Airgap[1], in.Airgap[0]
	b, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("Build of the same inputs in another order differs:\n%s\n%s", a, b)
	}
	in.Subjects[0].SHA256 = sum('9')
	c, _ := Build(in)
	pa, _ := Parse(a)
	pc, _ := Parse(c)
	if pa.Predicate.RunDetails.Metadata.InvocationID == pc.Predicate.RunDetails.Metadata.InvocationID {
		t.Errorf("two builds with different outputs share an invocation id")
	}
}

// TestShape checks the document against the field rules of in-toto
// Statement v1 and SLSA Provenance v1 (testdata, written as a JSON
// schema) with python3-jsonschema, and that a misspelt field fails them.
func TestShape(t *testing.T) {
	b, err := Build(sample())
	if err != nil {
		t.Fatal(err)
	}
	if out, err := validate(t, b); err != nil {
		t.Errorf("the provenance breaks the in-toto/SLSA field rules: %v\n%s", err, out)
	}
	broken := bytes.Replace(b, []byte(`"buildType"`), []byte(`"buildtype"`), 1)
	if out, err := validate(t, broken); err == nil || !strings.Contains(out, "buildType") {
		t.Errorf("the schema accepted a misspelt buildType: %v\n%s", err, out)
	}
	badDigest := bytes.Replace(b, []byte(sum('2')), []byte(strings.ToUpper(sum('a'))), 1)
	if out, err := validate(t, badDigest); err == nil {
		t.Errorf("the schema accepted an upper-case digest:\n%s", out)
	}
}

func validate(t *testing.T, doc []byte) (string, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "provenance.json")
	if err := os.WriteFile(p, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/bin/python3", "-c", `import json, sys, jsonschema
v = jsonschema.Draft7Validator(json.load(open(sys.argv[1])), format_checker=jsonschema.FormatChecker())
errs = list(v.iter_errors(json.load(open(sys.argv[2]))))
for e in errs: print("/".join(map(str, e.absolute_path)) + ": " + e.message)
sys.exit(1 if errs else 0)`, "testdata/slsa-provenance-v1.schema.json", p).CombinedOutput()
	if err != nil && strings.Contains(string(out), "No module named 'jsonschema'") {
		testimage.Missing(t, "python3-jsonschema (apt-get install python3-jsonschema, or make deps)")
	}
	return string(out), err
}

func TestParse(t *testing.T) {
	b, _ := Build(sample())
	st, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Subjects(); len(got) != 4 || got["pi-agent.img"] != sum('3') {
		t.Errorf("Subjects = %v", got)
	}
	if st.BaseSHA256() != sum('a') {
		t.Errorf("BaseSHA256 = %s", st.BaseSHA256())
	}
	if _, err := Parse([]byte(`{"_type":"https://in-toto.io/Statement/v0.1"}`)); err == nil {
		t.Errorf("Parse accepted a v0.1 statement")
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Input)
		want   string
	}{
		{name: "no subjects", change: func(in *Input) { in.Subjects = nil }, want: "no subjects"},
		{name: "twice", change: func(in *Input) { in.Subjects[1].Name = in.Subjects[0].Name }, want: `subject "pi-server.img" is empty or listed twice`},
		{name: "bad sum", change: func(in *Input) { in.Subjects[0].SHA256 = "xyz" }, want: `pi-server.img: sha256 is "xyz"`},
		{name: "no base sum", change: func(in *Input) { in.Base.SHA256 = "" }, want: "base image sha256"},
	}
	for _, tt := range tests {
		in := sample()
		tt.change(&in)
		if _, err := Build(in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Build = %v; want an error containing %q", tt.name, err, tt.want)
		}
	}
}

// TestResubject: a merge rebuilds the provenance from a shard's with the
// merged subjects, and gets what Build gives for the whole build; shards
// of one build are the same build, and a different option is not.
func TestResubject(t *testing.T) {
	whole := sample()
	shard := sample()
	shard.Subjects = shard.Subjects[:1]
	want, err := Build(whole)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := Build(shard)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Resubject(doc, whole.Subjects)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Resubject of a shard's provenance:\n%s\nwant Build's:\n%s", got, want)
	}
	if same, err := SameBuild(doc, want); err != nil || !same {
		t.Errorf("SameBuild of a shard and the whole build: %v, %v", same, err)
	}
	other := sample()
	other.Options = map[string]any{"compress": false}
	otherDoc, err := Build(other)
	if err != nil {
		t.Fatal(err)
	}
	if same, err := SameBuild(otherDoc, want); err != nil || same {
		t.Errorf("SameBuild of builds with other options: %v, %v", same, err)
	}
	if _, err := Resubject(doc, nil); err == nil {
		t.Error("Resubject with no subjects: no error")
	}
}
