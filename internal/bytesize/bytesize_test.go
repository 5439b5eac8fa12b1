package bytesize

import "testing"

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{-1: "?", 0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 20: "3.0 MiB", 3 << 29: "1.50 GiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q; want %q", n, got, want)
		}
	}
	if got := MiB(3 << 29); got != "1536.0 MiB" {
		t.Errorf("MiB(1.5 GiB) = %q; want 1536.0 MiB", got)
	}
}
