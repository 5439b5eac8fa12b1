package builder

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
)

// OSListFile is the Raspberry Pi Imager repository the build writes beside
// the images: `rpi-imager --repo /abs/path/out/os_list.json` offers every
// node by name.
const OSListFile = "os_list.json"

// imagerDevices are the Raspberry Pi models a pibake image boots on, as
// Imager's published list tags them (64-bit Pi 3, 4, 400, 5).
var imagerDevices = []string{"pi5-64bit", "pi4-64bit", "pi3-64bit"}

// osList renders os_list.json for the listed nodes, in the format of
// Raspberry Pi Imager's doc/json-schema/os-list-schema.json
// (raspberrypi/rpi-imager). Choices, from Imager 2.x's sources:
//   - init_format "none": ImageWriter::setSrc maps it to "", and
//     imageSupportsCustomization() is then false, so the wizard skips
//     every customisation step (which would rewrite pibake's cmdline.txt
//     and first-boot files). Set explicitly: a child without it would
//     inherit its parent's.
//   - url: an absolute, percent-encoded file:// URL; Imager resolves no
//     relative path. The .img.xz when there is one, else the .img.
//   - extract_sha256 and extract_size: of the image as written to the
//     card, which Imager checks after writing (lowercase hex).
//   - imager.devices: one device, pre-selected; without a device list the
//     device step cannot be left.
//
// Imager 1.x offers customisation for any file:// image whatever
// init_format says: the README asks for Imager 2.0 or later.
func osList(dir string, m *manifest) ([]byte, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	type entry struct {
		Name          string   `json:"name"`
		Description   string   `json:"description"`
		Icon          string   `json:"icon"`
		URL           string   `json:"url"`
		ExtractSize   int64    `json:"extract_size"`
		ExtractSHA256 string   `json:"extract_sha256"`
		DownloadSize  int64    `json:"image_download_size"`
		DownloadSHA   string   `json:"image_download_sha256"`
		ReleaseDate   string   `json:"release_date"`
		InitFormat    string   `json:"init_format"`
		Devices       []string `json:"devices"`
		Architecture  string   `json:"architecture"`
	}
	type device struct {
		Name         string   `json:"name"`
		Description  string   `json:"description"`
		Tags         []string `json:"tags"`
		MatchingType string   `json:"matching_type"`
		Default      bool     `json:"default"`
	}
	list := struct {
		Imager struct {
			Devices []device `json:"devices"`
		} `json:"imager"`
		OSList []entry `json:"os_list"`
	}{OSList: []entry{}}
	list.Imager.Devices = []device{{
		Name: "Raspberry Pi 3, 4, 400 or 5", Description: "64-bit Raspberry Pi models that run pibake's k3s nodes",
		Tags: imagerDevices, MatchingType: "inclusive", Default: true,
	}}
	for _, n := range m.Nodes {
		e := entry{
			Name: n.Hostname, Icon: "icons/cat_raspberry_pi_os.png",
			URL: fileURL(filepath.Join(abs, n.File)), ExtractSize: n.Size, ExtractSHA256: n.SHA256,
			DownloadSize: n.Size, DownloadSHA: n.SHA256, ReleaseDate: n.Released,
			InitFormat: "none", Devices: imagerDevices, Architecture: "armv8",
		}
		if n.XZ != "" {
			e.URL, e.DownloadSize, e.DownloadSHA = fileURL(filepath.Join(abs, n.XZ)), n.XZSize, n.XZSHA256
		}
		e.Description = fmt.Sprintf("k3s %s of cluster %s, built by pibake: already configured, do not customise", n.Role, m.Cluster)
		if n.State != StateCurrent {
			e.Description += fmt.Sprintf(" (%s: not rebuilt from the recipe as it is now)", n.State)
		}
		list.OSList = append(list.OSList, e)
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// fileURL is the file:// URL of an absolute path, percent-encoded.
func fileURL(abs string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
}
