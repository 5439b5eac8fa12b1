package hclfuncs

import (
	"math/big"
	"net/netip"
	"testing"
)

func TestNthAddress(t *testing.T) {
	tests := []struct {
		prefix string
		n      int64
		want   string
	}{
		{prefix: "192.168.1.0/24", n: 10, want: "192.168.1.10"},
		{prefix: "192.168.1.77/24", n: 1, want: "192.168.1.1"},
		{prefix: "10.0.0.0/16", n: 300, want: "10.0.1.44"},
		{prefix: "10.0.0.0/24", n: -2, want: "10.0.0.254"},
		{prefix: "fd00::/64", n: 17, want: "fd00::11"},
		{prefix: "10.0.0.0/24", n: 256, want: "error"},
		{prefix: "10.0.0.0/24", n: -257, want: "error"},
	}
	for _, tt := range tests {
		got, err := nthAddress(netip.MustParsePrefix(tt.prefix).Masked(), big.NewInt(tt.n))
		gotS := got.String()
		if err != nil {
			gotS = "error"
		}
		if gotS != tt.want {
			t.Errorf("nthAddress(%s, %d) = %s (%v); want %s", tt.prefix, tt.n, gotS, err, tt.want)
		}
	}
}
