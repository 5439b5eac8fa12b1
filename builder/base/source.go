package base

import (
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/pibake/pibake/internal/files"
	"github.com/pibake/pibake/internal/suggest"
)

// Aliases for official releases. The _latest URL redirects to the newest
// release's .img.xz; its .sha256 is published beside the file it
// redirects to.
var aliases = map[string]string{
	"raspios_lite_arm64:latest": "https://downloads.raspberrypi.com/raspios_lite_arm64_latest",
}

// Source is where a base image comes from.
type Source struct {
	// Spec is what the user wrote.
	Spec string
	// URL is set for downloads (http, https); Path for local files
	// (including file:// URLs).
	URL  string
	Path string
	// Pin is an expected SHA-256 (lowercase hex) of the source file: the
	// .img.xz as downloaded, or the .img for raw sources.
	Pin string
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ParseSource reads an image source: an alias, an http(s) or file:// URL,
// or a local path. pin may be empty.
func ParseSource(spec, pin string) (Source, error) {
	pin = strings.ToLower(strings.TrimSpace(pin))
	if pin != "" && !sha256Hex.MatchString(pin) {
		return Source{}, fmt.Errorf("image sha256 %q is not 64 hexadecimal digits", pin)
	}
	s := Source{Spec: spec, Pin: pin}
	if u, ok := aliases[spec]; ok {
		s.URL = u
		return s, nil
	}
	switch {
	case strings.HasPrefix(spec, "https://"), strings.HasPrefix(spec, "http://"):
		u, err := url.Parse(spec)
		if err != nil || u.Host == "" {
			return Source{}, fmt.Errorf("image source %q is not a valid URL", spec)
		}
		s.URL = spec
	case strings.HasPrefix(spec, "file://"):
		u, err := url.Parse(spec)
		if err != nil || u.Path == "" {
			return Source{}, fmt.Errorf("image source %q is not a valid file:// URL", spec)
		}
		s.Path = filepath.FromSlash(u.Path)
	case strings.Contains(spec, "://"):
		return Source{}, fmt.Errorf("image source %q: only http, https and file URLs are supported", spec)
	case aliasShaped.MatchString(spec) && !files.Exists(spec):
		return Source{}, unknownAlias(spec)
	default:
		// A local file, whatever its name: Fetch judges it by its first
		// bytes (xz, or a raw image), as it does a download.
		s.Path = spec
	}
	return s, nil
}

// aliasShaped is what an alias looks like (name:tag), not a path.
var aliasShaped = regexp.MustCompile(`^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]*$`)

// unknownAlias refuses a name:tag that is no alias, suggesting the
// nearest one.
func unknownAlias(spec string) error {
	names := make([]string, 0, len(aliases))
	for a := range aliases {
		names = append(names, a)
	}
	slices.Sort(names)
	if best := suggest.Nearest(spec, names, len(spec)/2); best != "" {
		return fmt.Errorf("image source %q: unknown alias; did you mean %s?", spec, best)
	}
	return fmt.Errorf("image source %q: unknown alias (there is %s), and no such file", spec, strings.Join(names, ", "))
}

// String names the source for messages.
func (s Source) String() string {
	if s.URL != "" {
		return s.URL
	}
	return s.Path
}

// baseName is the file name at the end of a URL.
func baseName(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return path.Base(u.Path)
}
