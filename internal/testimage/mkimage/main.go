// Command mkimage writes a Raspberry Pi OS-shaped disk image (the tests'
// generator) for `make demo`: pibake can then be tried without downloading
// a release.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/pibake/pibake/internal/testimage"
)

func main() {
	out := flag.String("o", "base.img", "image file to write")
	style := flag.String("style", "bookworm", "release shape: bookworm or trixie")
	flag.Parse()
	spec := testimage.Bookworm()
	if *style == "trixie" {
		spec = testimage.Trixie()
	}
	if err := testimage.Build(*out, spec); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(*out)
}
