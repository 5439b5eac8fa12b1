package fleet_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/pibake/pibake/builder"
	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/fleet"
	"github.com/pibake/pibake/internal/buildtest"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/recipes"
)

// osListServer serves an OS list shaped like Raspberry Pi's (the Lite
// image nested in a category, another list behind subitems_url, decoys
// with similar names), the release server's image as a dated file, and a
// k3s channel list.
func osListServer(t *testing.T, s *buildtest.ReleaseServer, rawSum string) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/os_list.json":
			fmt.Fprintf(w, `{"imager": {"devices": []}, "os_list": [
  {"name": "Raspberry Pi OS (64-bit)", "description": "desktop", "url": "%[1]s/raspios_arm64/images/x/desktop.img.xz", "extract_sha256": "%[2]s", "release_date": "2026-01-01"},
  {"name": "Raspberry Pi OS (other)", "description": "more", "subitems": [
    {"name": "Raspberry Pi OS Lite (64-bit)", "description": "old", "url": "%[1]s/raspios_lite_arm64/images/raspios_lite_arm64-2024-10-28/old.img.xz", "extract_sha256": "%[2]s", "release_date": "2024-10-22"},
    {"name": "Raspberry Pi OS (Legacy, 64-bit) Lite", "description": "legacy", "url": "%[1]s/raspios_oldstable_lite_arm64/images/y/legacy.img.xz", "extract_sha256": "%[2]s", "release_date": "2026-02-01"}
  ]},
  {"name": "More", "description": "elsewhere", "subitems_url": "%[1]s/more.json"}
]}`, srv.URL, rawSum)
		case "/more.json":
			fmt.Fprintf(w, `{"os_list": [{"name": "Raspberry Pi OS Lite (64-bit)", "description": "new", "url": "%s/raspios_lite_arm64/images/raspios_lite_arm64-2025-11-24/2025-11-24-raspios-trixie-arm64-lite.img.xz", "extract_sha256": "%s", "release_date": "2025-11-24"}]}`, srv.URL, rawSum)
		case "/raspios_lite_arm64/images/raspios_lite_arm64-2025-11-24/2025-11-24-raspios-trixie-arm64-lite.img.xz":
			http.ServeContent(w, r, "x.img.xz", time.Unix(1e9, 0), strings.NewReader(string(s.XZ)))
		case "/raspios_lite_arm64/images/raspios_lite_arm64-2025-11-24/2025-11-24-raspios-trixie-arm64-lite.img.xz.sha256":
			sum := sha256.Sum256(s.XZ)
			fmt.Fprintf(w, "%s  2025-11-24-raspios-trixie-arm64-lite.img.xz\n", hex.EncodeToString(sum[:]))
		case "/channels":
			fmt.Fprint(w, `{"type": "collection", "data": [{"id": "stable", "latest": "v1.33.5+k3s1"}, {"id": "latest", "latest": "v1.34.1+k3s1"}]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestLock: pibake lock resolves the alias through a loopback OS list to
// the newest Lite release, verifies it, pins the k3s channel's release,
// and a build with the lock downloads that file and installs that k3s;
// a download that no longer matches fails with both sums; a lock made
// for another source is refused.
func TestLock(t *testing.T) {
	s := buildtest.NewReleaseServer(t)
	rawSum, _, err := files.SHA256(context.Background(), s.Raw)
	if err != nil {
		t.Fatal(err)
	}
	lists := osListServer(t, s, rawSum)
	dir := t.TempDir()
	recipe := filepath.Join(dir, "lab.hcl")
	os.WriteFile(recipe, []byte("cluster {\n  token = \""+buildtest.Token+"\"\n  k3s_channel = \"stable\"\n}\nnode \"srv\" {\n  role = \"server\"\n}\n"), 0o600)
	load := func() *recipes.Recipe {
		r, diags := recipes.Load(hclparse.NewParser(), recipe)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return r
	}
	cache := filepath.Join(t.TempDir(), "cache")
	bopt := base.Options{Cache: base.Cache{Dir: cache}, HTTPClient: lists.Client(), RetryDelay: time.Millisecond}
	l, err := fleet.MakeLock(context.Background(), load(), fleet.LockOptions{Base: bopt, OSList: lists.URL + "/os_list.json", K3sChannels: lists.URL + "/channels"})
	if err != nil {
		t.Fatal(err)
	}
	if err := fleet.WriteLock(l, recipe); err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile(recipe + ".lock")
	for _, want := range []string{
		`source         = "raspios_lite_arm64:latest"`,
		`url            = "` + lists.URL + `/raspios_lite_arm64/images/raspios_lite_arm64-2025-11-24/2025-11-24-raspios-trixie-arm64-lite.img.xz"`,
		`sha256         = "` + s.SHA() + `"`,
		`extract_sha256 = "` + rawSum + `"`,
		`release_date   = "2025-11-24"`,
		`version = "v1.33.5+k3s1"`,
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("lab.hcl.lock lacks %s:\n%s", want, text)
		}
	}

	// The build uses the lock: the locked file, the locked k3s.
	r := load()
	back, diags := recipes.LoadLock(hclparse.NewParser(), recipes.LockPath(r))
	if diags.HasErrors() || back == nil {
		t.Fatalf("LoadLock: %v", diags)
	}
	if err := r.ApplyLock(back); err != nil {
		t.Fatal(err)
	}
	opt := builder.Options{OutDir: filepath.Join(t.TempDir(), "out"), Jobs: 1, Version: "test", Base: bopt}
	res, err := builder.Build(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	env := buildtest.ReadBootFile(t, res[0].File, "pibake/node.env")
	if !strings.Contains(env, "PIBAKE_K3S_VERSION=v1.33.5+k3s1") || !strings.Contains(env, "PIBAKE_K3S_CHANNEL=''") {
		t.Errorf("node.env does not install the locked k3s:\n%s", env)
	}

	// The server now serves another file under the locked URL: the build
	// fails, naming both sums.
	s.XZ = append(append([]byte(nil), s.XZ...), make([]byte, 4)...) // stream padding: still valid xz, another sum
	r = load()
	r.ApplyLock(back)
	opt.Base.Cache.Dir, opt.OutDir = filepath.Join(t.TempDir(), "cache2"), filepath.Join(t.TempDir(), "out2")
	_, err = builder.Build(context.Background(), r, opt)
	newSum := sha256.Sum256(s.XZ)
	if err == nil || !strings.Contains(err.Error(), back.Image.SHA256) || !strings.Contains(err.Error(), hex.EncodeToString(newSum[:])) {
		t.Errorf("build against a changed download = %v; want both sums", err)
	}

	// A lock made for another source is refused, not ignored.
	r = load()
	r.Image.Source = "https://example.org/other.img.xz"
	if err := r.ApplyLock(back); !errors.Is(err, recipes.ErrStaleLock) || !strings.Contains(err.Error(), "pibake lock") {
		t.Errorf("ApplyLock for another source = %v", err)
	}
	r = load()
	r.Cluster.K3sChannel, r.Cluster.K3sVersion = "", "v1.31.4+k3s1"
	if err := r.ApplyLock(back); !errors.Is(err, recipes.ErrStaleLock) {
		t.Errorf("ApplyLock of a channel lock to a pinned version = %v", err)
	}
}
