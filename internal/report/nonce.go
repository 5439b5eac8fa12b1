package report

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"sync"
	"time"
)

// Nonces are stateless: a nonce is its issue time and 8 random bytes
// under an HMAC with a secret made for this run of the receiver, so
// issuing one stores nothing and a flood of nonce requests costs no
// memory. Only nonces spent by correctly signed reports are remembered,
// until they expire, and at most maxSpentPerNode per node: a node sends a
// few dozen records in a first boot, and only a node's own key can sign.
//
//	nonce = hex( issued unix nanoseconds, 8 bytes big-endian
//	           | random, 8 bytes
//	           | HMAC-SHA256(run secret, the 16 bytes before)[:16] )
//
// 64 hex digits; report.sh accepts any run of lowercase hex digits.
const (
	nonceBytes      = 32
	maxSpentPerNode = 256
	// nonceSkew is how far in the future an issue time may lie: none but
	// a clock stepped back between issue and use.
	nonceSkew = 5 * time.Second
)

// Why a nonce is not taken.
var (
	errNonceInvalid = errors.New("nonce not issued by this watch (a forgery, or this watch was restarted): fetch a new one")
	errNonceExpired = errors.New("nonce expired: fetch a new one")
	errNonceSpent   = errors.New("nonce already used (a replayed report): fetch a new one")
	errTooMany      = errors.New("too many reports from this node within the nonce lifetime")
)

// nonces issues and checks nonces, and remembers the spent ones.
type nonces struct {
	secret []byte

	mu    sync.Mutex
	spent map[string]map[[nonceBytes]byte]time.Time // node → spent nonce → issue time
}

func newNonces() *nonces {
	secret := make([]byte, 32)
	rand.Read(secret) // never fails (crypto/rand, Go 1.24)
	return &nonces{secret: secret, spent: map[string]map[[nonceBytes]byte]time.Time{}}
}

func (ns *nonces) mac(head []byte) []byte {
	m := hmac.New(sha256.New, ns.secret)
	m.Write(head)
	return m.Sum(nil)[:16]
}

// issue makes a nonce at time now; it stores nothing.
func (ns *nonces) issue(now time.Time) string {
	var b [nonceBytes]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	rand.Read(b[8:16])
	copy(b[16:], ns.mac(b[:16]))
	return hex.EncodeToString(b[:])
}

// check reports whether s is a nonce this receiver issued that has not
// expired at now; it stores nothing.
func (ns *nonces) check(s string, now time.Time) ([nonceBytes]byte, error) {
	var b [nonceBytes]byte
	if len(s) != 2*nonceBytes {
		return b, errNonceInvalid
	}
	if _, err := hex.Decode(b[:], []byte(s)); err != nil {
		return b, errNonceInvalid
	}
	if !hmac.Equal(b[16:], ns.mac(b[:16])) {
		return b, errNonceInvalid
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	if now.Sub(issued) > NonceTTL || issued.Sub(now) > nonceSkew {
		return b, errNonceExpired
	}
	return b, nil
}

// spend uses up nonce s for node, which signed it correctly: an error
// when it is not a fresh nonce of this run, was used before, or the node
// has spent maxSpentPerNode within NonceTTL.
func (ns *nonces) spend(node, s string, now time.Time) error {
	b, err := ns.check(s, now)
	if err != nil {
		return err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	spent := ns.spent[node]
	if spent == nil {
		spent = map[[nonceBytes]byte]time.Time{}
		ns.spent[node] = spent
	}
	if _, ok := spent[b]; ok {
		return errNonceSpent
	}
	if len(spent) >= maxSpentPerNode {
		// Forget what has expired: check refuses those anyway.
		for k, issued := range spent {
			if now.Sub(issued) > NonceTTL {
				delete(spent, k)
			}
		}
		if len(spent) >= maxSpentPerNode {
			return errTooMany
		}
	}
	spent[b] = time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	return nil
}

// remembered is how many spent nonces are kept, for tests.
func (ns *nonces) remembered() int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n := 0
	for _, s := range ns.spent {
		n += len(s)
	}
	return n
}
