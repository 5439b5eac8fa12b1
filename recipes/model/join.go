package model

import (
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// APIPort is the port k3s servers listen on for joining nodes.
const APIPort = 6443

// BatchDelaySeconds is how long each agent join batch waits after the
// one before (firstboot.sh: PIBAKE_BATCH_DELAY's default).
const BatchDelaySeconds = 60

var dnsNamePattern = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// JoinURL turns a server attribute into the URL a node joins: an IP
// address (IPv6 too), a DNS name, or an https:// URL, whose port is
// APIPort unless the URL names one.
func JoinURL(s string) (string, bool) {
	if strings.HasPrefix(s, "https://") {
		u, err := url.Parse(s)
		if err != nil || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return "", false
		}
		host, port := u.Hostname(), u.Port()
		if !ValidHost(host) || strings.HasSuffix(u.Host, ":") || port != "" && !isPort(port) {
			return "", false
		}
		if port == "" {
			port = strconv.Itoa(APIPort)
		}
		return "https://" + net.JoinHostPort(host, port), true
	}
	if !ValidHost(s) {
		return "", false
	}
	return "https://" + net.JoinHostPort(s, strconv.Itoa(APIPort)), true
}

func isPort(s string) bool {
	p, err := strconv.Atoi(s)
	return err == nil && p > 0 && p < 65536
}

// ValidHost reports whether s is an IP address or a DNS name.
func ValidHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	return len(s) <= 253 && dnsNamePattern.MatchString(s)
}
