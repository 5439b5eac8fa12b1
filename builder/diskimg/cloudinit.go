package diskimg

import (
	"encoding/json"
	"fmt"
	"strings"
)

// CloudInitRun is what cloud-init left on the root file system of a card
// that has booted: the instance it set up and the datasource it used
// (cloud-init's doc/rtd/development/internal_files.rst: /var/lib/cloud/data
// holds instance-id and result.json of the previous boot).
type CloudInitRun struct {
	// InstanceID is the instance cloud-init set up last: pibake's
	// "pibake-…" when it read the seed, "iid-datasource-none" when it fell
	// back to no datasource.
	InstanceID string `json:"instance_id"`
	// Datasource is the datasource of the last boot's result, such as
	// "DataSourceNoCloud [seed=/boot/firmware]" or "DataSourceNone".
	Datasource string `json:"datasource,omitempty"`
	// Errors are the errors cloud-init recorded in that result.
	Errors []string `json:"errors,omitempty"`
}

// NoDatasource reports whether cloud-init ran without any datasource: it
// found no seed, so nothing it would have run from one ran.
func (r *CloudInitRun) NoDatasource() bool {
	return r.InstanceID == "iid-datasource-none" || strings.HasPrefix(r.Datasource, "DataSourceNone")
}

// CloudInitRun reads what cloud-init recorded on the root file system, or
// nil when it has never run there (an image not booted yet, or no
// cloud-init).
func (im *Image) CloudInitRun() (*CloudInitRun, error) {
	ok, err := im.RootFileExists("var/lib/cloud/data/instance-id")
	if err != nil || !ok {
		return nil, err
	}
	id, err := im.ReadRootFile("var/lib/cloud/data/instance-id")
	if err != nil {
		return nil, err
	}
	run := &CloudInitRun{InstanceID: strings.TrimSpace(string(id))}
	if ok, err := im.RootFileExists("var/lib/cloud/data/result.json"); err != nil || !ok {
		return run, err
	}
	b, err := im.ReadRootFile("var/lib/cloud/data/result.json")
	if err != nil {
		return nil, err
	}
	var result struct {
		V1 struct {
			Datasource string   `json:"datasource"`
			Errors     []string `json:"errors"`
		} `json:"v1"`
	}
	if err := json.Unmarshal(b, &result); err != nil {
		return nil, fmt.Errorf("root partition: /var/lib/cloud/data/result.json: %w", err)
	}
	run.Datasource, run.Errors = result.V1.Datasource, result.V1.Errors
	return run, nil
}
