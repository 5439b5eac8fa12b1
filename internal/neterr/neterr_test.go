package neterr

import (
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		unreachable bool
		permanent   bool
		want        string
	}{
		{"unknown host", &net.DNSError{Name: "h.example", IsNotFound: true}, true, true, "cannot resolve host h.example"},
		{"DNS timeout", &net.DNSError{Name: "h.example", IsTemporary: true}, true, false, "cannot resolve host"},
		{"refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, true, false, "cannot connect: connection refused"},
		{"certificate", x509.UnknownAuthorityError{}, false, true, "TLS certificate problem"},
		{"reset", errors.New("connection reset by peer"), false, false, "download https://x/y: connection reset by peer"},
	}
	for _, tt := range tests {
		err := Describe("https://x/y", tt.err)
		var u *Unreachable
		if errors.As(err, &u) != tt.unreachable || Permanent(tt.err) != tt.permanent || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Describe = %v (unreachable %v), Permanent = %v; want %q, unreachable %v, permanent %v",
				tt.name, err, errors.As(err, &u), Permanent(tt.err), tt.want, tt.unreachable, tt.permanent)
		}
	}
	for code, want := range map[int]string{404: "the file is not there", 403: "access denied", 503: "try again later", 418: "HTTP 418 I'm a teapot"} {
		if err := Status("https://x/y", code); !strings.Contains(err.Error(), want) {
			t.Errorf("Status(%d) = %v; want %q", code, err, want)
		}
	}
}
