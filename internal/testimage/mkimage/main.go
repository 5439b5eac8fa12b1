// Command mkimage writes a Raspberry Pi OS-shaped disk image for `make
// demo`, in pure Go and the same bytes on every run (internal/demoimage):
// pibake can then be tried offline, with nothing installed but Go.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pibake/pibake/internal/demoimage"
	"github.com/pibake/pibake/internal/testimage"
)

func main() {
	out := flag.String("o", "base.img", "image file to write (its directory is made if missing)")
	style := flag.String("style", "bookworm", "release shape: bookworm or trixie")
	flag.Parse()
	spec := testimage.Bookworm()
	if *style == "trixie" {
		spec = testimage.Trixie()
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
	if err := demoimage.Build(*out, spec); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(*out)
}
