package report

import (
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
// right before it posts.
const (
	NonceTTL      = 10 * time.Minute
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
	// Node is the hostname the report claimed, when it could be read:
	// anyone can claim any name, so it is shown quoted and cut short.
	Node   string
	Status int
	// Kind is one of the Refused* kinds, for summaries; Reason says it
	// in full.
	Kind   string
	Reason string
}

// Kinds of refusal.
const (
	RefusedMalformed = "malformed"
	RefusedTooLarge  = "too large"
	RefusedNotInPlan = "node not in the plan"
	RefusedSignature = "bad signature"
	RefusedNonce     = "nonce not valid"
	RefusedTooMany   = "too many reports"
)

// Receiver is the HTTP handler nodes report to.
type Receiver struct {
	key       []byte
	nodes     map[string]Node
	onEvent   func(Event)
	onRefusal func(Refusal)
	now       func() time.Time

	emit   sync.Mutex // onEvent and onRefusal run one at a time
	nonces *nonces
}

// NewReceiver makes a receiver for the nodes of an out directory whose
// report key is key. onEvent and onRefusal are called for every report,
// one at a time; onRefusal must not block, since anyone on the network
// can send refused reports as fast as the receiver takes them.
func NewReceiver(key []byte, nodes []Node, onEvent func(Event), onRefusal func(Refusal)) *Receiver {
	r := &Receiver{key: key, nodes: map[string]Node{}, onEvent: onEvent, onRefusal: onRefusal, now: time.Now, nonces: newNonces()}
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
		io.WriteString(w, r.nonces.issue(r.now()))
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

// wire is a report's body.
type wire struct {
	Nonce  string          `json:"nonce"`
	Status json.RawMessage `json:"status"`
}

func (r *Receiver) report(w http.ResponseWriter, req *http.Request) {
	received := r.now()
	refuse := func(code int, node, kind, format string, args ...any) {
		reason := fmt.Sprintf(format, args...)
		r.emit.Lock()
		r.onRefusal(Refusal{Received: received, Remote: req.RemoteAddr, Node: node, Status: code, Kind: kind, Reason: reason})
		r.emit.Unlock()
		http.Error(w, reason, code)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxReportSize))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			refuse(http.StatusRequestEntityTooLarge, "", RefusedTooLarge, "report larger than %d bytes", maxReportSize)
			return
		}
		refuse(http.StatusBadRequest, "", RefusedMalformed, "reading the report: %v", err)
		return
	}
	var msg wire
	if err := json.Unmarshal(body, &msg); err != nil {
		refuse(http.StatusBadRequest, "", RefusedMalformed, "malformed report: %v", err)
		return
	}
	st, err := status.Parse(msg.Status)
	if err != nil {
		refuse(http.StatusBadRequest, "", RefusedMalformed, "malformed report: %v", err)
		return
	}
	n, ok := r.nodes[st.Node]
	if !ok {
		refuse(http.StatusForbidden, st.Node, RefusedNotInPlan, "the node is not in the plan")
		return
	}
	if !verify(NodeKey(r.key, st.Node, st.Build), body, req.Header.Get(SignatureHeader)) {
		refuse(http.StatusUnauthorized, st.Node, RefusedSignature, "the signature does not match: forged, or built with another out directory's report key")
		return
	}
	// Only a signed report uses up its nonce: a stranger cannot spend the
	// nonces of real nodes, nor fill the memory of spent ones.
	if err := r.nonces.spend(st.Node, msg.Nonce, received); err != nil {
		code, kind := http.StatusConflict, RefusedNonce
		if errors.Is(err, errTooMany) {
			code, kind = http.StatusTooManyRequests, RefusedTooMany
		}
		refuse(code, st.Node, kind, "%v", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
	r.emit.Lock()
	defer r.emit.Unlock()
	r.onEvent(Event{Received: received, Remote: req.RemoteAddr, Status: *st, OlderBuild: !slices.Contains(n.Builds, st.Build)})
}
