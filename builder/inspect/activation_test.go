package inspect

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/testimage"
)

// mountOrder is the credential pibake's cloud-init nodes carry until
// activation (firstboot: mountOrderArgs).
const mountOrder = "systemd.set_credential_binary=systemd.unit-dropin.cloud-init-local.service~pibake-bootfs:W1VuaXRdClJlcXVpcmVzTW91bnRzRm9yPS9ib290L2Zpcm13YXJlCg=="

// cloudInitNone is what cloud-init 25 left on a Trixie look-alike whose
// local stage ran before /boot/firmware was mounted (make e2e,
// PIBAKE_E2E_BREAK=mount-order: instance iid-datasource-none,
// DataSourceNone).
var cloudInitNone = map[string]string{
	"var/lib/cloud/data/instance-id": "iid-datasource-none\n",
	"var/lib/cloud/data/result.json": "{\n \"v1\": {\n  \"datasource\": \"DataSourceNone\",\n  \"errors\": []\n }\n}",
}

// TestNotActivated: a card with pibake's payload and no status record
// says whether it has booted and, if so, what it shows and why it was
// likely not activated, from the boot partition and cloud-init's record
// on the root; never a secret.
func TestNotActivated(t *testing.T) {
	const secret = "not-activated-secret-0123456789"
	tests := []struct {
		name        string
		root        map[string]string
		add, remove []string
		status      bool
		// want: "" for no verdict, else a cause fragment.
		want string
		text []string
	}{
		{name: "not booted", add: []string{mountOrder}, text: []string{"first boot: not run yet"}},
		{name: "raced, ordered", root: cloudInitNone, add: []string{mountOrder}, remove: []string{"resize"},
			want: "although pibake ordered it after the boot partition's mount",
			text: []string{"NOT ACTIVATED", "secrets included", "still carries the activation's arguments: systemd.set_credential_binary=systemd.unit-dropin.cloud-init-local.se...", "instance iid-datasource-none, datasource DataSourceNone"}},
		{name: "raced, old pibake", root: cloudInitNone, remove: []string{"resize"},
			want: "started before /boot/firmware was mounted", text: []string{"NOT ACTIVATED", "cloud-init#6614"}},
		{name: "seed read, activator silent", remove: []string{"resize"}, root: map[string]string{"var/lib/cloud/data/instance-id": "pibake-c467af8d71d431e9\n",
			"var/lib/cloud/data/result.json": `{"v1": {"datasource": "DataSourceNoCloud [seed=/boot/firmware]", "errors": []}}`},
			want: "cloud-init set up instance pibake-c467af8d71d431e9", text: []string{"activate.log"}},
		{name: "activated", root: cloudInitNone, remove: []string{"resize"}, status: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := smallTrixie()
			spec.RootFiles = tt.root
			img := testimage.For(t, spec)
			im, err := diskimg.Open(img, true)
			if err != nil {
				t.Fatal(err)
			}
			files := []diskimg.File{
				{Path: "pibake/node.json", Data: []byte(`{"hostname":"pi-server","role":"server","cluster":"lab","method":"cloud-init","build_id":"b1"}`)},
				{Path: "pibake/k3s-config.yaml", Data: []byte("token: \"" + secret + "\"\n")},
			}
			if tt.status {
				files = append(files, diskimg.File{Path: "pibake/status.json", Data: []byte(`{"version":1,"node":"pi-server","stage":"activate","state":"ok","time":"2026-12-07T18:00:00Z"}` + "\n")})
			}
			err = im.Apply(diskimg.Edit{Files: files, CmdlineAdd: tt.add, CmdlineRemove: tt.remove})
			im.Close()
			if err != nil {
				t.Fatal(err)
			}
			ins, err := Read(img)
			if err != nil {
				t.Fatal(err)
			}
			checkVerdict(t, ins, tt.want, tt.text, secret)
		})
	}
}

func checkVerdict(t *testing.T, ins *Report, want string, texts []string, secret string) {
	t.Helper()
	switch {
	case want == "" && ins.NotActivated != nil:
		t.Errorf("verdict %+v; want none", ins.NotActivated)
	case want != "" && (ins.NotActivated == nil || !strings.Contains(ins.NotActivated.Cause, want)):
		t.Errorf("verdict %+v; want a cause saying %q", ins.NotActivated, want)
	}
	var text, js bytes.Buffer
	if err := ins.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := ins.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	for _, w := range texts {
		if !strings.Contains(text.String(), w) {
			t.Errorf("inspect text lacks %q:\n%s", w, text.String())
		}
	}
	if strings.Contains(text.String()+js.String(), secret) {
		t.Error("inspect shows the token")
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || (back.NotActivated == nil) != (ins.NotActivated == nil) {
		t.Errorf("inspect JSON: %v\n%s", err, js.String())
	}
}

// TestNotActivatedBootDir: from a boot partition mounted on any computer
// the root is out of reach: the verdict says so and points at the card.
func TestNotActivatedBootDir(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "pibake"), 0o755)
	os.WriteFile(filepath.Join(dir, "cmdline.txt"), []byte("console=serial0,115200 root=PARTUUID=01023c6b-02 rootwait cgroup_memory=1 cgroup_enable=memory ds=nocloud;i=pibake-1 "+mountOrder+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "pibake", "node.json"), []byte(`{"hostname":"pi-server","role":"server","cluster":"lab","method":"cloud-init","build_id":"b1"}`), 0o644)
	ins, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkVerdict(t, ins, "a mounted boot partition shows no root file system", []string{"NOT ACTIVATED", "pibake inspect /dev/sdX"}, "no-token-in-this-test")
}
