package model

import (
	"testing"
)

func TestJoinURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{in: "192.168.1.10", want: "https://192.168.1.10:6443"},
		{in: "k3s.lab.example", want: "https://k3s.lab.example:6443"},
		{in: "fd00::1", want: "https://[fd00::1]:6443"},
		{in: "https://k3s.example", want: "https://k3s.example:6443"},
		{in: "https://k3s.example/", want: "https://k3s.example:6443"},
		{in: "https://k3s.example:8443", want: "https://k3s.example:8443"},
		{in: "https://[fd00::1]:6443", want: "https://[fd00::1]:6443"},
		{in: "https://[fd00::1]", want: "https://[fd00::1]:6443"},
		{in: "https://10.0.0.1:99999"},
		{in: "https://k3s.example:"},
		{in: "https://user@k3s.example"},
		{in: "https://k3s.example/path"},
		{in: "http://k3s.example"},
		{in: "not a host"},
	} {
		got, ok := JoinURL(tt.in)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("JoinURL(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}
