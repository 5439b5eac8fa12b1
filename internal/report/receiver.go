package report

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/pibake/pibake/firstboot/status"
)

// Limits of the receiver. A nonce is good for NonceTTL: a node fetches one
// right before it posts. At most maxNonces are outstanding, the oldest
// dropped first, so a flood of nonce requests costs bounded memory.
const (
	NonceTTL      = 10 * time.Minute
	maxNonces     = 4096
	maxReportSize = 64 << 10
)

// Node is a node the receiver takes reports from.
type Node struct {
	Hostname string
	// Builds are the build ids of the node's images the out directory
	// has built or flashed; a report signed for another build id of the
	// node is accepted (only this directory's key can have made it) and
	// marked OlderBuild.
	Builds []string
}

// Event is an accepted report.
type Event struct {
	Received   time.Time
	Remote     string
	Status     status.Record
	OlderBuild bool
}

// Refusal is a report that was not accepted, and why.
type Refusal struct {
	Received time.Time
	Remote   string
	// Node is the hostname the report claimed, when it could be read.
	Node   string
	Status int
	Reason string
}

// Receiver is the HTTP handler nodes report to.
type Receiver struct {
	key       []byte
	nodes     map[string]Node
	onEvent   func(Event)
	onRefusal func(Refusal)
	now       func() time.Time

	emit   sync.Mutex // onEvent and onRefusal run one at a time
	mu     sync.Mutex
	nonces map[string]time.Time
	order  []string // nonces in the order they were issued
}

// NewReceiver makes a receiver for the nodes of an out directory whose
// report key is key. onEvent and onRefusal are called for every report,
// one at a time.
func NewReceiver(key []byte, nodes []Node, onEvent func(Event), onRefusal func(Refusal)) *Receiver {
	r := &Receiver{key: key, nodes: map[string]Node{}, onEvent: onEvent, onRefusal: onRefusal, now: time.Now, nonces: map[string]time.Time{}}
	for _, n := range nodes {
		r.nodes[n.Hostname] = n
	}
	return r
}

// ServeHTTP serves NoncePath and ReportPath.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case NoncePath:
		if req.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, r.newNonce())
	case ReportPath:
		if req.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		r.report(w, req)
	default:
		http.NotFound(w, req)
	}
}

func (r *Receiver) newNonce() string {
	raw := make([]byte, 16)
	rand.Read(raw) // never fails (crypto/rand, Go 1.24)
	n := hex.EncodeToString(raw)
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.order) > 0 && (len(r.order) >= maxNonces || now.Sub(r.nonces[r.order[0]]) > NonceTTL) {
		delete(r.nonces, r.order[0])
		r.order = r.order[1:]
	}
	r.nonces[n] = now
	r.order = append(r.order, n)
	return n
}

// takeNonce uses up nonce n: true if it was issued, unused and fresh.
func (r *Receiver) takeNonce(n string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	issued, ok := r.nonces[n]
	if !ok {
		return false
	}
	delete(r.nonces, n) // the order slice drops it when it comes up
	return r.now().Sub(issued) <= NonceTTL
}

// wire is a report's body.
type wire struct {
	Nonce  string          `json:"nonce"`
	Status json.RawMessage `json:"status"`
}

func (r *Receiver) report(w http.ResponseWriter, req *http.Request) {
	received := r.now()
	refuse := func(code int, node, format string, args ...any) {
		reason := fmt.Sprintf(format, args...)
		r.emit.Lock()
		r.onRefusal(Refusal{Received: received, Remote: req.RemoteAddr, Node: node, Status: code, Reason: reason})
		r.emit.Unlock()
		http.Error(w, reason, code)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxReportSize))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			refuse(http.StatusRequestEntityTooLarge, "", "report larger than %d bytes", maxReportSize)
			return
		}
		refuse(http.StatusBadRequest, "", "reading the report: %v", err)
		return
	}
	var msg wire
	if err := json.Unmarshal(body, &msg); err != nil {
		refuse(http.StatusBadRequest, "", "malformed report: %v", err)
		return
	}
	st, err := status.Parse(msg.Status)
	if err != nil {
		refuse(http.StatusBadRequest, "", "malformed report: %v", err)
		return
	}
	n, ok := r.nodes[st.Node]
	if !ok {
		refuse(http.StatusForbidden, st.Node, "node %q is not in the plan", st.Node)
		return
	}
	if !verify(NodeKey(r.key, st.Node, st.Build), body, req.Header.Get(SignatureHeader)) {
		refuse(http.StatusUnauthorized, st.Node, "the signature does not match: forged, or built with another out directory's report key")
		return
	}
	// Only a signed report uses up its nonce: a stranger cannot spend the
	// nonces of real nodes.
	if !r.takeNonce(msg.Nonce) {
		refuse(http.StatusConflict, st.Node, "nonce unknown, already used or expired (a replayed report, or this watch was restarted): fetch a new one")
		return
	}
	w.WriteHeader(http.StatusNoContent)
	r.emit.Lock()
	defer r.emit.Unlock()
	r.onEvent(Event{Received: received, Remote: req.RemoteAddr, Status: *st, OlderBuild: !slices.Contains(n.Builds, st.Build)})
}
