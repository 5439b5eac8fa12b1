// Package imager writes the Raspberry Pi Imager repository a build leaves
// beside its images (os_list.json): `rpi-imager --repo /abs/out/os_list.json`
// offers every node by name.
package imager

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
)

// File is the repository's name in the output directory.
const File = "os_list.json"

// devices are the Raspberry Pi models a pibake image boots on, as
// Imager's published list tags them (64-bit Pi 3, 4, 400, 5).
var devices = []string{"pi5-64bit", "pi4-64bit", "pi3-64bit"}

// Image is one node's image as the list offers it.
type Image struct {
	Name, Role string
	// Current is false for an image not rebuilt from the recipe as it is
	// now (an outdated or orphaned node): its description says so.
	Current bool
	// State is what Current summarises, shown when it is false.
	State string
	// File, Size and SHA256 are the .img's; XZ, XZSize and XZSHA256 its
	// .img.xz's, when there is one.
	File, SHA256 string
	Size         int64
	XZ, XZSHA256 string
	XZSize       int64
	Released     string // YYYY-MM-DD
	Cluster      string
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

// List renders os_list.json for cluster's images, whose files are in dir, in the
// format of Raspberry Pi Imager's doc/json-schema/os-list-schema.json
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
// init_format says: docs/flashing.md asks for Imager 2.0 or later.
func List(dir, cluster string, images []Image) ([]byte, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	list := struct {
		Imager struct {
			Devices []device `json:"devices"`
		} `json:"imager"`
		OSList []entry `json:"os_list"`
	}{OSList: []entry{}}
	list.Imager.Devices = []device{{
		Name: "Raspberry Pi 3, 4, 400 or 5", Description: "64-bit Raspberry Pi models that run pibake's k3s nodes",
		Tags: devices, MatchingType: "inclusive", Default: true,
	}}
	for _, n := range images {
		e := entry{
			Name: n.Name, Icon: "icons/cat_raspberry_pi_os.png",
			URL: fileURL(filepath.Join(abs, n.File)), ExtractSize: n.Size, ExtractSHA256: n.SHA256,
			DownloadSize: n.Size, DownloadSHA: n.SHA256, ReleaseDate: n.Released,
			InitFormat: "none", Devices: devices, Architecture: "armv8",
		}
		if n.XZ != "" {
			e.URL, e.DownloadSize, e.DownloadSHA = fileURL(filepath.Join(abs, n.XZ)), n.XZSize, n.XZSHA256
		}
		e.Description = fmt.Sprintf("k3s %s of cluster %s, built by pibake: already configured, do not customise", n.Role, cluster)
		if !n.Current {
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
