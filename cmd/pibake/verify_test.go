package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/supplytest"
)

// TestVerifyCommand: pibake verify exits 0 on an untouched build, 1
// naming the image after a byte of it changed.
func TestVerifyCommand(t *testing.T) {
	spec := supplytest.Spec(20) // the command's exit codes and report, not the layout: small
	spec.BootMiB, spec.RootMiB = 132, 16
	b := supplytest.Make(t, spec, "pi-server")
	runVerify := func(args ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append([]string{"verify"}, args...), &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	if code, out := runVerify("--allowed-signers", b.AllowedSigners, b.Dir); code != exitOK || !strings.Contains(out, "OK      signature SHA256SUMS.sig: signed by "+supplytest.Principal) {
		t.Fatalf("pibake verify of an untouched build: exit %d\n%s", code, out)
	}
	f, err := os.OpenFile(b.Image("pi-server"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff}, b.Spec.RootStart()*512+2<<20)
	f.Close()
	code, out := runVerify("--json", b.Dir)
	if code != exitFailure || !strings.Contains(out, `"name": "image pi-server.img"`) || !strings.Contains(out, "partition 2 (ext4 rootfs)") {
		t.Errorf("pibake verify --json of a changed image: exit %d\n%s", code, out)
	}
	if code, _ := runVerify(b.Dir, b.Dir); code != exitUsage {
		t.Errorf("pibake verify with two arguments: exit %d; want %d", code, exitUsage)
	}
}
