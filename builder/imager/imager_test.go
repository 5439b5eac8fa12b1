package imager

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestList: each image by its name, pointing at its .img.xz when it has
// one (with the download's sum and size) and at its .img otherwise, by an
// absolute, percent-encoded file:// URL; with no customisation; and an
// image not current says so. (builder's TestOSList checks a build's list
// against Imager's JSON schema.)
func TestList(t *testing.T) {
	b, err := List("/out dir", "lab", []Image{
		{Name: "srv", Role: "server", Current: true, State: "current", File: "srv.img", SHA256: "aa", Size: 10, XZ: "srv.img.xz", XZSHA256: "bb", XZSize: 3},
		{Name: "old", Role: "agent", State: "outdated", File: "old.img", SHA256: "cc", Size: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		OSList []struct {
			Name, Description, URL string
			InitFormat             string `json:"init_format"`
			ExtractSHA256          string `json:"extract_sha256"`
			DownloadSHA256         string `json:"image_download_sha256"`
			DownloadSize           int64  `json:"image_download_size"`
		} `json:"os_list"`
	}
	if err := json.Unmarshal(b, &list); err != nil || len(list.OSList) != 2 {
		t.Fatalf("List = %s (%v)", b, err)
	}
	srv, old := list.OSList[0], list.OSList[1]
	if srv.URL != "file:///out%20dir/srv.img.xz" || srv.ExtractSHA256 != "aa" || srv.DownloadSHA256 != "bb" || srv.DownloadSize != 3 || srv.InitFormat != "none" {
		t.Errorf("srv = %+v", srv)
	}
	if old.URL != "file:///out%20dir/old.img" || old.DownloadSHA256 != "cc" || !strings.Contains(old.Description, "(outdated: not rebuilt") || strings.Contains(srv.Description, "not rebuilt") {
		t.Errorf("old = %+v, srv = %+v", old, srv)
	}
}
