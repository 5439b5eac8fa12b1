package firstboot

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pibake/pibake/internal/configtxt"
	"github.com/pibake/pibake/internal/golden"
	"github.com/pibake/pibake/internal/testimage"
)

// configTxtProfiles are hardware profiles, each a node's hardware block.
var configTxtProfiles = []struct{ name, hardware string }{
	{name: "default", hardware: ""},
	{name: "pi5_nvme_gen3_usb_current", hardware: "model = \"pi5\"\n boot_device = \"nvme\"\n pcie_gen = 3\n usb_max_current = true\n config_txt = [\"dtoverlay=disable-bt\"]"},
	{name: "pi5_usb", hardware: "model = \"pi5\"\n boot_device = \"usb\"\n usb_max_current = true"},
	{name: "pi4_usb_quirk", hardware: "model = \"pi4\"\n boot_device = \"usb\"\n usb_storage_quirks = [\"152d:0578\"]"},
	{name: "pi400_usb_lines", hardware: "model = \"pi400\"\n boot_device = \"usb\"\n config_txt = [\"# no HDMI audio\", \"dtparam=audio=off\"]"},
	{name: "cm4_nvme", hardware: "model = \"cm4\"\n boot_device = \"nvme\""},
	{name: "cm5_nvme", hardware: "model = \"cm5\"\n boot_device = \"nvme\""},
	{name: "pi500plus_nvme_gen2", hardware: "model = \"pi500+\"\n boot_device = \"nvme\"\n pcie_gen = 2"},
	{name: "any_lines", hardware: "config_txt = [\"dtparam=fan_temp0=50000\"]"},
}

// TestConfigTxtGolden renders each profile's block and puts it into the
// real Bookworm and Trixie config.txt (testimage's stock files): golden
// files of whole config.txt files, in which everything before the block
// is the stock file, byte for byte.
func TestConfigTxtGolden(t *testing.T) {
	for _, pr := range configTxtProfiles {
		t.Run(pr.name, func(t *testing.T) {
			src := "cluster {\n  token = \"" + testToken + "\"\n}\nnode \"edge\" {\n  role = \"server\"\n  hardware {\n " + pr.hardware + "\n  }\n}\n"
			p := renderFor(t, src, "edge", Options{BuildID: "b1"})
			if (p.ConfigTxt == nil) != (pr.name == "default" || pr.name == "pi4_usb_quirk" || pr.name == "cm4_nvme") {
				t.Errorf("block %q: want one exactly where the profile sets something in config.txt", p.ConfigTxt)
			}
			for _, spec := range []testimage.Spec{testimage.Bookworm(), testimage.Trixie()} {
				stock := spec.ConfigTxt()
				cfg := []byte(stock)
				if p.ConfigTxt != nil {
					var err error
					if cfg, err = configtxt.Patch([]byte(stock), p.ConfigTxt); err != nil {
						t.Fatal(err)
					}
				}
				if !bytes.HasPrefix(cfg, []byte(stock)) {
					t.Errorf("%s: config.txt does not keep the stock file before the block", spec.Name)
				}
				if block := string(cfg[len(stock):]); block != "" && !strings.HasSuffix(block, "[all]\n# pibake: end\n") {
					t.Errorf("%s: the block does not end with [all] then its end marker:\n%s", spec.Name, block)
				}
				golden.Compare(t, filepath.Join("testdata", "configtxt", pr.name+"."+spec.Name+".golden"), cfg)
			}
		})
	}
}
