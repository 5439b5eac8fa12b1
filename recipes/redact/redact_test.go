package redact

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
)

func TestRedactedFiles(t *testing.T) {
	src := "cluster {\n  token = \"literal-secret-123456\"\n  agent_token = env(\"AGENT\")\n  report {\n    url = \"http://ops:pw@10.0.0.5:8470\"\n  }\n}\nnode \"a\" {\n  wifi {\n    psk = \"wifi-secret\"\n  }\n  report {\n    url = \"http://10.0.0.5:8470/a@b\"\n  }\n}\n"
	p := hclparse.NewParser()
	if _, diags := p.ParseHCL([]byte(src), "r.hcl"); diags.HasErrors() {
		t.Fatal(diags)
	}
	got := string(RedactedFiles(p.Files())["r.hcl"].Bytes)
	want := strings.NewReplacer(`"literal-secret-123456"`, strings.Repeat("*", 23), `"wifi-secret"`, strings.Repeat("*", 13), `"http://ops:pw@10.0.0.5:8470"`, strings.Repeat("*", 29)).Replace(src)
	if got != want {
		t.Errorf("RedactedFiles =\n%s\nwant\n%s", got, want)
	}
	if string(p.Files()["r.hcl"].Bytes) != src {
		t.Error("RedactedFiles changed the parser's own copy")
	}
}
