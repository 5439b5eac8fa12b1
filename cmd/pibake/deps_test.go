package main

import (
	"os/exec"
	"strings"
	"testing"
)

// allowedModules are the modules the pibake binary may link, and why. A new
// dependency has to be argued for here, in review.
var allowedModules = map[string]string{
	"github.com/pibake/pibake":                 "this module",
	"github.com/spf13/pflag":                   "POSIX flags (chosen dependency)",
	"github.com/hashicorp/hcl/v2":              "the recipe language (chosen dependency)",
	"github.com/zclconf/go-cty":                "HCL's value system (chosen dependency)",
	"github.com/agext/levenshtein":             "HCL's did-you-mean suggestions",
	"github.com/apparentlymart/go-textseg/v15": "HCL's Unicode segmentation",
	"github.com/apparentlymart/go-textseg/v17": "go-cty's Unicode segmentation",
	"github.com/mitchellh/go-wordwrap":         "HCL's diagnostic text wrapping",
	"github.com/google/go-cmp":                 "imported by hcl/v2/hclwrite, which gohcl imports",
	"golang.org/x/text":                        "HCL/cty Unicode normalisation",
	"github.com/diskfs/go-diskfs":              "partition tables and FAT32 (chosen dependency)",
	"github.com/google/uuid":                   "go-diskfs: partition and file system UUIDs",
	"golang.org/x/sys":                         "go-diskfs: ioctls and file locking",
	"github.com/elliotwutingfeng/asciiset":     "go-diskfs: FAT name validation",
	"github.com/sirupsen/logrus":               "go-diskfs's logger (silent unless enabled)",
	"github.com/therootcompany/xz":             "xz block decoding, 1.5x faster than ulikunitz/xz (measured: builder/base/xz.go)",
	"github.com/ulikunitz/xz":                  "xz decompression (chosen dependency)",
	"github.com/cavaliergopher/grab/v3":        "resumable downloads (chosen dependency)",
	"golang.org/x/sync":                        "errgroup: one bounded worker pool for nodes and xz blocks, cancelled as one",
	"github.com/vbauerster/mpb/v8":             "progress bars, several at once, with log lines above them (issue 16: a well-kept library)",
	"github.com/VividCortex/ewma":              "mpb: rate and ETA averages",
	"github.com/acarl005/stripansi":            "mpb: width of coloured text",
	"github.com/clipperhouse/uax29/v2":         "mpb: text segmentation for widths",
	"github.com/mattn/go-runewidth":            "mpb: display width of runes",
	"github.com/vbauerster/cupwriter":          "mpb: cursor-up terminal writer",
	"github.com/CycloneDX/cyclonedx-go":        "the per-node SBOM in CycloneDX 1.6, with the format's own library (issue 26); links only the standard library",
	"golang.org/x/crypto":                      "ssh keys, signatures and ssh-agent for SSHSIG signing and verification (issue 26)",
}

func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, mod := range strings.Fields(string(out)) {
		if _, ok := allowedModules[mod]; !ok {
			t.Errorf("pibake links %s, which is not in allowedModules; add it there with the reason, or drop it", mod)
		}
	}
}
