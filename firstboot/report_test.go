package firstboot

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"
)

// TestReporterHMAC checks report.sh's HMAC-SHA256, written in POSIX shell
// over sha256sum, against Go's crypto/hmac: keys whose bytes XOR the pads
// to NUL (0x36, 0x5c) or are NUL, and bodies with printf's own escapes in
// them. A mismatch would have every report refused as forged.
func TestReporterHMAC(t *testing.T) {
	src := string(script("report.sh"))
	from, to := strings.Index(src, "pad_key() {"), strings.Index(src, "# send FILE")
	if from < 0 || to < from {
		t.Fatal("report.sh has no pad_key … send between which the HMAC functions sit")
	}
	funcs := src[from:to]
	keys := []string{
		strings.Repeat("36", 32),
		strings.Repeat("5c", 16) + strings.Repeat("00", 16),
		"00112233445566778899aabbccddeeff0123456789abcdef36363636365c5cff",
	}
	bodies := []string{
		`{"nonce":"0a1b","status":{"reason":"50% done \n \\ '\"' $HOME"}}`,
		"",
		"ünïcödé and a tab\there\n",
	}
	for _, key := range keys {
		for _, body := range bodies {
			cmd := exec.Command("sh", "-c", funcs+"\nhmac_sha256 \"$1\"", "sh", key)
			cmd.Stdin = strings.NewReader(body)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("sh: %v\n%s", err, out)
			}
			k, _ := hex.DecodeString(key)
			m := hmac.New(sha256.New, k)
			m.Write([]byte(body))
			if got, want := strings.TrimSpace(string(out)), hex.EncodeToString(m.Sum(nil)); got != want {
				t.Errorf("key %s, body %q: report.sh gives %s; want %s", key, body, got, want)
			}
		}
	}
}
