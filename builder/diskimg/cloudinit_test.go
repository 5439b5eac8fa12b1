package diskimg

import (
	"testing"

	"github.com/pibake/pibake/internal/testimage"
)

// TestCloudInitRun reads what cloud-init leaves in /var/lib/cloud/data on
// a booted card, as cloud-init 25 writes it (result.json indented by one
// space; the instance id "iid-datasource-none" when it fell back to no
// datasource, cloudinit/sources/DataSourceNone.py).
func TestCloudInitRun(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		want      *CloudInitRun
		noDatasrc bool
	}{
		{name: "not booted", want: nil},
		{name: "seed read", files: map[string]string{
			"var/lib/cloud/data/instance-id": "pibake-c467af8d71d431e9\n",
			"var/lib/cloud/data/result.json": "{\n \"v1\": {\n  \"datasource\": \"DataSourceNoCloud [seed=/boot/firmware][dsmode=net]\",\n  \"errors\": []\n }\n}",
		}, want: &CloudInitRun{InstanceID: "pibake-c467af8d71d431e9", Datasource: "DataSourceNoCloud [seed=/boot/firmware][dsmode=net]"}},
		{name: "fell back", files: map[string]string{
			"var/lib/cloud/data/instance-id": "iid-datasource-none\n",
			"var/lib/cloud/data/result.json": "{\n \"v1\": {\n  \"datasource\": \"DataSourceNone\",\n  \"errors\": [\n   \"('scripts_user', RuntimeError('Runparts: 1 failures'))\"\n  ]\n }\n}",
		}, want: &CloudInitRun{InstanceID: "iid-datasource-none", Datasource: "DataSourceNone", Errors: []string{"('scripts_user', RuntimeError('Runparts: 1 failures'))"}}, noDatasrc: true},
		{name: "no result yet", files: map[string]string{"var/lib/cloud/data/instance-id": "iid-datasource-none\n"},
			want: &CloudInitRun{InstanceID: "iid-datasource-none"}, noDatasrc: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testimage.Trixie()
			spec.RootFiles = tt.files
			im, err := Open(testimage.For(t, spec), false)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			got, err := im.CloudInitRun()
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tt.want == nil) || got != nil && (got.InstanceID != tt.want.InstanceID || got.Datasource != tt.want.Datasource || len(got.Errors) != len(tt.want.Errors)) {
				t.Fatalf("CloudInitRun() = %+v; want %+v", got, tt.want)
			}
			if got != nil && got.NoDatasource() != tt.noDatasrc {
				t.Errorf("NoDatasource() = %v; want %v", got.NoDatasource(), tt.noDatasrc)
			}
		})
	}
}
