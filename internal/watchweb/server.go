// Package watchweb is `pibake watch --ui`: one self-contained page (its
// script and style embedded, nothing fetched from elsewhere, so it works
// offline) with a tile per awaited node, coloured by phase, counts per
// phase, each node's timeline, a filter, and live updates by server-sent
// events.
//
// What nodes send is shown as the terminal table shows it (report.Row:
// escaped and cut), and the page only ever puts it into the document as
// text (textContent), under a Content-Security-Policy that allows no
// script but its own. On a loopback address the page is open to this
// machine's users and checks the Host header (so a web site cannot reach
// it by DNS rebinding); on any other address its URL carries a random
// access token.
//
// This package is internal to pibake and not a stable API.
package watchweb

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// DefaultPort is the page's port when --ui names none.
const DefaultPort = "8471"

// csp allows the page its own script, style and event stream, and nothing
// else: no inline script, no other origin, no frames, no forms.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Server serves the page.
type Server struct {
	hub   *Hub
	token string // "" on loopback
	ln    net.Listener
	srv   *http.Server
}

// Listen opens addr for the page: host:port, :port or host, loopback
// when no host is given. On an address that is not loopback the page
// needs a random access token, which is in URL only.
func Listen(addr string, hub *Hub) (*Server, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = strings.Trim(addr, "[]"), DefaultPort // no port given
	}
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("--ui %s: %w", addr, err)
	}
	s := &Server{hub: hub, ln: ln}
	if !isLoopback(host) {
		b := make([]byte, 16)
		rand.Read(b) // never fails (crypto/rand, Go 1.24)
		s.token = hex.EncodeToString(b)
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10}
	return s, nil
}

// isLoopback reports whether host names only this machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// URL is the page's address, with its token when it has one; on every
// interface (0.0.0.0, ::), by this machine's name.
func (s *Server) URL() string {
	addr := s.ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		if name, err := os.Hostname(); err == nil && name != "" {
			host = name
		}
	}
	u := "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port)) + "/"
	if s.token != "" {
		u += s.token + "/"
	}
	return u
}

// Serve serves the page until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// Close ends the page: browsers are told watching ended (Hub.End), then
// let go within a second.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if s.srv.Shutdown(ctx) != nil {
		s.srv.Close()
	}
}

// files are the page's parts, by name under its root.
var files = map[string]string{
	"":        "assets/index.html",
	"app.js":  "assets/app.js",
	"app.css": "assets/app.css",
}

var types = map[string]string{".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	name, ok := s.route(r)
	if !ok {
		http.Error(w, "not found: open the URL pibake watch printed", http.StatusNotFound)
		return
	}
	switch name {
	case "events":
		s.events(w, r)
	case "state.json":
		h.Set("Content-Type", "application/json")
		w.Write(s.hub.Snapshot())
	default:
		file, ok := files[name]
		if !ok {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		b, err := assets.ReadFile(file)
		if err != nil {
			panic(err) // embedded: cannot fail
		}
		h.Set("Content-Type", types[file[strings.LastIndex(file, "."):]])
		w.Write(b)
	}
}

// route checks the request's access and returns the name it asks for
// under the page's root ("" for the page).
func (s *Server) route(r *http.Request) (string, bool) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	if s.token == "" {
		// Loopback: only a Host this machine's own names, so a page
		// elsewhere cannot reach this one through a rebound DNS name.
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		return p, isLoopback(host)
	}
	tok, rest, found := strings.Cut(p, "/")
	if !found || subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) != 1 {
		return "", false
	}
	return rest, true
}

// events streams the page's changes: a snapshot first, then each change,
// and a comment every 15 s so a dead connection is noticed.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	snap, c, full := s.hub.subscribe()
	if full {
		http.Error(w, "too many pages open on this watch", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	send := func(event string, data []byte) bool {
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("snapshot", snap) || c == nil {
		return
	}
	defer s.hub.unsubscribe(c)
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case m, open := <-c:
			if !open {
				return
			}
			if !send(m.event, m.data) {
				return
			}
		case <-ping.C:
			if _, err := io.WriteString(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

// Hub is what the page shows.
func (s *Server) Hub() *Hub { return s.hub }
