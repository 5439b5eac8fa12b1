package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/internal/atomicfile"
	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/recipes"
)

// DefaultK3sChannels is k3s's channel server, which install.sh asks for a
// channel's release (update.k3s.io/v1-release/channels/<channel>); its list
// names each channel's latest release.
const DefaultK3sChannels = "https://update.k3s.io/v1-release/channels"

// LockOptions configure MakeLock.
type LockOptions struct {
	Base base.Options
	// OSList and K3sChannels default to Raspberry Pi's OS list and k3s's
	// channel server; a mirror, or a test's loopback server, may stand in.
	OSList      string
	K3sChannels string
}

// MakeLock resolves the recipe's moving inputs: an image alias through the
// OS list to its dated file (downloaded and verified, so the lock records
// sums that were checked: the .xz against its published .sha256, the
// image against the list's extract_sha256), any other source to its
// checksum, and a k3s channel to its current release.
func MakeLock(ctx context.Context, r *recipes.Recipe, opt LockOptions) (*recipes.Lock, error) {
	if opt.OSList == "" {
		opt.OSList = DefaultOSList
	}
	if opt.K3sChannels == "" {
		opt.K3sChannels = DefaultK3sChannels
	}
	if opt.Base.Logf == nil {
		opt.Base.Logf = func(string, ...any) {}
	}
	l := &recipes.Lock{Path: recipes.LockPath(r), Image: recipes.LockImage{Source: r.Image.Source, URL: r.Image.Source}}
	var rel OSRelease
	if IsAlias(r.Image.Source) {
		var err error
		if rel, err = ResolveAlias(ctx, opt.Base.HTTPClient, opt.OSList, r.Image.Source); err != nil {
			return nil, err
		}
		opt.Base.Logf("%s is %s (released %s)", r.Image.Source, rel.URL, rel.ReleaseDate)
		l.Image.URL, l.Image.ExtractSHA256, l.Image.ReleaseDate = rel.URL, rel.ExtractSHA256, rel.ReleaseDate
	}
	src, err := base.ParseSource(l.Image.URL, r.Image.SHA256)
	if err != nil {
		return nil, err
	}
	img, err := base.Fetch(ctx, src, opt.Base)
	if err != nil {
		return nil, err
	}
	defer img.Release()
	l.Image.SHA256 = img.SHA256
	if rel.ExtractSHA256 != "" {
		sum, _, err := files.SHA256(ctx, img.Path)
		if err != nil {
			return nil, err
		}
		if sum != rel.ExtractSHA256 {
			return nil, fmt.Errorf("image %s decompresses to sha256 %s, but the OS list %s says %s", rel.URL, sum, opt.OSList, rel.ExtractSHA256)
		}
	}
	if ch := r.Cluster.K3sChannel; ch != "" {
		v, err := k3sChannelRelease(ctx, opt.Base.HTTPClient, opt.K3sChannels, ch)
		if err != nil {
			return nil, err
		}
		opt.Base.Logf("k3s channel %s is %s", ch, v)
		l.K3s = &recipes.LockK3s{Channel: ch, Version: v}
	}
	return l, nil
}

// k3sReleasePattern is a k3s release tag.
var k3sReleasePattern = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?\+k3s[0-9]+$`)

// k3sChannelRelease asks the channel server for a channel's latest
// release: {"data": [{"id": "stable", "latest": "v1.31.4+k3s1"}, …]}.
func k3sChannelRelease(ctx context.Context, client *http.Client, url, channel string) (string, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("k3s channels %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("k3s channels %s: HTTP %s", url, resp.Status)
	}
	var list struct {
		Data []struct {
			ID     string `json:"id"`
			Latest string `json:"latest"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&list); err != nil {
		return "", fmt.Errorf("k3s channels %s: %w", url, err)
	}
	for _, c := range list.Data {
		if c.ID == channel {
			if !k3sReleasePattern.MatchString(c.Latest) {
				return "", fmt.Errorf("k3s channels %s: channel %s names %q, not a k3s release", url, channel, c.Latest)
			}
			return c.Latest, nil
		}
	}
	return "", fmt.Errorf("k3s channels %s: no channel %q", url, channel)
}

// WriteLock writes the lock file atomically.
func WriteLock(l *recipes.Lock, recipe string) error {
	return atomicfile.WriteFile(l.Path, l.Bytes(filepath.Base(recipe)), 0o644)
}
