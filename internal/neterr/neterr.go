// Package neterr words what went wrong reaching a URL in the user's
// terms (a name that does not resolve, a connection refused, a
// certificate problem, an HTTP status), and says whether trying again can
// help: for the base image's download and the lists a lock file is
// resolved through.
package neterr

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
)

// Unreachable is a request that never reached its server: the name did
// not resolve or no connection could be made. The machine may be
// offline, so the command line adds what can be done without a network.
type Unreachable struct{ Err error }

func (e *Unreachable) Error() string { return e.Err.Error() }
func (e *Unreachable) Unwrap() error { return e.Err }

// Describe words a failure to fetch url so the user knows what to do.
func Describe(url string, err error) error {
	var dns *net.DNSError
	var op *net.OpError
	switch {
	case errors.As(err, &dns):
		return &Unreachable{fmt.Errorf("download %s: cannot resolve host %s: check the URL and your network's DNS", url, dns.Name)}
	case errors.As(err, &op) && op.Op == "dial":
		return &Unreachable{fmt.Errorf("download %s: cannot connect: %w", url, op.Err)}
	case certificateProblem(err):
		return fmt.Errorf("download %s: TLS certificate problem: %v", url, err)
	}
	return fmt.Errorf("download %s: %w", url, err)
}

// Permanent reports whether trying again cannot help: a name that does
// not exist, or a certificate the client will not accept.
func Permanent(err error) bool {
	var dns *net.DNSError
	var certInvalid x509.CertificateInvalidError
	return errors.As(err, &dns) && (dns.IsNotFound || !dns.IsTemporary) || certificateProblem(err) || errors.As(err, &certInvalid)
}

func certificateProblem(err error) bool {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &verify)
}

// Status says what an HTTP error status means for a download.
func Status(url string, code int) error {
	hint := ""
	switch {
	case code == http.StatusNotFound || code == http.StatusGone:
		hint = ": the file is not there; check the URL (image.source)"
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		hint = ": access denied"
	case code >= 500:
		hint = ": the server is failing; try again later"
	}
	return fmt.Errorf("download %s: HTTP %d %s%s", url, code, http.StatusText(code), hint)
}
