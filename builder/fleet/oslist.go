package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/pibake/pibake/internal/neterr"
)

// DefaultOSList is the list of operating systems Raspberry Pi Imager reads
// (raspberrypi/rpi-imager src/config.h, OSLIST_URL): it names each release
// of Raspberry Pi OS by its dated file and the SHA-256 of its image.
const DefaultOSList = "https://downloads.raspberrypi.com/os_list_imagingutility_v4.json"

// OSRelease is one image as the OS list describes it.
type OSRelease struct {
	Name string `json:"name"`
	// URL is the dated .img.xz, never a moving alias.
	URL           string `json:"url"`
	ExtractSHA256 string `json:"extract_sha256"`
	ExtractSize   int64  `json:"extract_size"`
	DownloadSize  int64  `json:"image_download_size"`
	ReleaseDate   string `json:"release_date"`
}

// sha256Hex is a SHA-256 as the OS list gives it: 64 lowercase hex digits.
var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// aliasPaths say which OS list entries an alias stands for: those whose
// URL holds the path (the names change and are shared with "Legacy" and
// third-party entries; the path does not).
var aliasPaths = map[string]string{
	"raspios_lite_arm64:latest": "/raspios_lite_arm64/images/",
}

// IsAlias reports whether spec is a moving alias such as
// raspios_lite_arm64:latest.
func IsAlias(spec string) bool { _, ok := aliasPaths[spec]; return ok }

// ResolveAlias finds the newest release an alias stands for in the OS
// list at listURL, following inline subitems and subitems_url children as
// Imager does.
func ResolveAlias(ctx context.Context, client *http.Client, listURL, alias string) (OSRelease, error) {
	path, ok := aliasPaths[alias]
	if !ok {
		return OSRelease{}, fmt.Errorf("%q is not an image alias pibake knows", alias)
	}
	if client == nil {
		client = http.DefaultClient
	}
	rs := &resolver{ctx: ctx, client: client, path: path}
	if err := rs.walk(listURL, 0); err != nil {
		return OSRelease{}, err
	}
	if rs.best.URL == "" {
		return OSRelease{}, fmt.Errorf("OS list %s names no image under %s", listURL, path)
	}
	if !sha256Hex.MatchString(rs.best.ExtractSHA256) {
		return OSRelease{}, fmt.Errorf("OS list %s: %s has no valid extract_sha256", listURL, rs.best.URL)
	}
	return rs.best, nil
}

// resolver walks an OS list for the newest entry under path.
type resolver struct {
	ctx    context.Context
	client *http.Client
	path   string
	best   OSRelease
}

// walk reads the list at url and visits its entries.
func (rs *resolver) walk(url string, depth int) error {
	if depth > 4 { // Imager's MAX_SUBITEMS_DEPTH is of the same order
		return fmt.Errorf("OS list %s: subitems nested too deep", url)
	}
	req, err := http.NewRequestWithContext(rs.ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := rs.client.Do(req)
	if err != nil {
		return neterr.Describe(url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return neterr.Status(url, resp.StatusCode)
	}
	var list struct {
		OSList []json.RawMessage `json:"os_list"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&list); err != nil {
		return fmt.Errorf("OS list %s: %w", url, err)
	}
	return rs.visit(list.OSList, depth)
}

// visit follows an entry's children, inline or behind a URL, and keeps
// the newest image whose URL holds the path.
func (rs *resolver) visit(items []json.RawMessage, depth int) error {
	for _, raw := range items {
		var e struct {
			OSRelease
			Subitems    []json.RawMessage `json:"subitems"`
			SubitemsURL string            `json:"subitems_url"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			return err
		}
		switch {
		case len(e.Subitems) > 0:
			if err := rs.visit(e.Subitems, depth+1); err != nil {
				return err
			}
		case e.SubitemsURL != "":
			if err := rs.walk(e.SubitemsURL, depth+1); err != nil {
				return err
			}
		case strings.Contains(e.URL, rs.path) && e.ReleaseDate >= rs.best.ReleaseDate:
			rs.best = e.OSRelease
		}
	}
	return nil
}
