package testimage

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"testing"
)

// TestStockFiles: the stock files are still upstream's, byte for byte,
// by git's own hash of them (stock/README.md).
func TestStockFiles(t *testing.T) {
	for _, tt := range []struct {
		spec Spec
		blob string
	}{
		{spec: Bookworm(), blob: "fecd26f16fa9ac744d9c4505478dd8d2fe2ea139"},
		{spec: Trixie(), blob: "8180b3ac91227768d494e399023f872aa601402f"},
	} {
		data := tt.spec.ConfigTxt()
		h := sha1.New()
		fmt.Fprintf(h, "blob %d\x00%s", len(data), data)
		if got := hex.EncodeToString(h.Sum(nil)); got != tt.blob {
			t.Errorf("stock/%s-config.txt is git blob %s; want pi-gen's %s", tt.spec.Name, got, tt.blob)
		}
	}
}
