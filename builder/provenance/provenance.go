// Package provenance writes a build's provenance.json: an in-toto
// Statement v1 (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md)
// whose predicate is SLSA Provenance v1 (https://slsa.dev/spec/v1.0/provenance):
// the subjects are the build's output files with their SHA-256; the
// predicate says what they were built from (the recipe's keyed hash, the
// lock file, the base image, air-gap files) and with what (pibake's and
// Go's versions, the build's options).
//
// The bytes are deterministic: no timestamps (SLSA makes startedOn and
// finishedOn optional), sorted subjects and dependencies, and an
// invocation id derived from the inputs, so an unsharded build and its
// merged shards give the same document.
package provenance

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
)

// The fixed type URIs.
const (
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://slsa.dev/provenance/v1"
	// BuildType names how to read externalParameters and
	// internalParameters (documented in pibake's supply-chain docs).
	BuildType = "https://github.com/pibake/pibake/blob/main/docs/supply-chain.md#build-type-v1"
	// BuilderID names the builder: pibake itself, run by whoever runs it.
	BuilderID = "https://github.com/pibake/pibake"
)

// Input is what a build's provenance records. Nothing in it is secret.
type Input struct {
	PibakeVersion string
	GoVersion     string
	// Cluster is the recipe's cluster name.
	Cluster string
	// RecipeHash is the manifest's recipe hash: an HMAC keyed with the
	// stretched secrets, so a recipe with a weak literal Wi-Fi key gives
	// no cheap way to test guesses (a plain SHA-256 would). Recipe names
	// the recipe file or directory for people: its base name, so that the
	// shards of a build run elsewhere record the same.
	Recipe, RecipeHash string
	// Lock is the lock file, when the build used one.
	Lock *Artifact
	// Base is the base image: as downloaded (URI and SHA-256) and raw.
	Base           Artifact
	BaseRawSHA256  string
	BaseSource     string
	BaseReleased   string // YYYY-MM-DD
	K3sVersion     string
	K3sChannel     string
	InstallScript  *Artifact
	Airgap         []Artifact
	Options        map[string]any // the build's options that change outputs
	Subjects       []Artifact     // every output file with its SHA-256
	InvocationSeed string         // optional: what makes two runs differ (empty: derived from the inputs)
}

// Artifact is a named file with its SHA-256, and where it came from.
type Artifact struct {
	Name, URI, SHA256 string
}

// descriptor is an in-toto ResourceDescriptor.
type descriptor struct {
	Name        string            `json:"name,omitempty"`
	URI         string            `json:"uri,omitempty"`
	Digest      map[string]string `json:"digest,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Statement is the document; the exported fields are what verify reads.
type Statement struct {
	Type          string       `json:"_type"`
	Subject       []descriptor `json:"subject"`
	PredicateType string       `json:"predicateType"`
	Predicate     predicate    `json:"predicate"`
}

type predicate struct {
	BuildDefinition buildDefinition `json:"buildDefinition"`
	RunDetails      runDetails      `json:"runDetails"`
}

type buildDefinition struct {
	BuildType            string         `json:"buildType"`
	ExternalParameters   map[string]any `json:"externalParameters"`
	InternalParameters   map[string]any `json:"internalParameters,omitempty"`
	ResolvedDependencies []descriptor   `json:"resolvedDependencies,omitempty"`
}

type runDetails struct {
	Builder  builder  `json:"builder"`
	Metadata metadata `json:"metadata"`
}

type builder struct {
	ID      string            `json:"id"`
	Version map[string]string `json:"version,omitempty"`
}

type metadata struct {
	InvocationID string `json:"invocationId"`
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Build returns provenance.json for the build described by in.
func Build(in Input) ([]byte, error) {
	if err := in.check(); err != nil {
		return nil, fmt.Errorf("provenance: %w", err)
	}
	st := Statement{Type: StatementType, PredicateType: PredicateType}
	for _, s := range in.Subjects {
		st.Subject = append(st.Subject, descriptor{Name: s.Name, Digest: map[string]string{"sha256": s.SHA256}})
	}
	sort.Slice(st.Subject, func(i, j int) bool { return st.Subject[i].Name < st.Subject[j].Name })
	st.Predicate.BuildDefinition = buildDefinition{
		BuildType:            BuildType,
		ExternalParameters:   in.external(),
		InternalParameters:   map[string]any{"goVersion": in.GoVersion},
		ResolvedDependencies: in.dependencies(),
	}
	st.Predicate.RunDetails.Builder = builder{ID: BuilderID, Version: map[string]string{"pibake": in.PibakeVersion, "go": in.GoVersion}}
	return st.encode(in.InvocationSeed)
}

// encode writes the statement, its invocation id made from seed, or,
// when seed is empty, derived from the rest of the statement.
func (st Statement) encode(seed string) ([]byte, error) {
	st.Predicate.RunDetails.Metadata.InvocationID = ""
	if seed == "" {
		b, err := json.Marshal(st)
		if err != nil {
			return nil, fmt.Errorf("provenance: %w", err)
		}
		seed = hexSum(b)
	}
	st.Predicate.RunDetails.Metadata.InvocationID = "pibake-build:" + seed
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(st); err != nil {
		return nil, fmt.Errorf("provenance: %w", err)
	}
	return buf.Bytes(), nil
}

func (in Input) check() error {
	if len(in.Subjects) == 0 {
		return fmt.Errorf("no subjects: a build with no output files has nothing to attest")
	}
	seen := map[string]bool{}
	for _, s := range in.Subjects {
		if s.Name == "" || seen[s.Name] {
			return fmt.Errorf("subject %q is empty or listed twice", s.Name)
		}
		seen[s.Name] = true
	}
	sums := map[string]string{"base image sha256": in.Base.SHA256}
	for _, a := range append(append([]Artifact{}, in.Subjects...), in.Airgap...) {
		sums[a.Name] = a.SHA256
	}
	for _, a := range []*Artifact{in.Lock, in.InstallScript} {
		if a != nil && a.SHA256 != "" {
			sums[a.Name] = a.SHA256
		}
	}
	if in.BaseRawSHA256 != "" {
		sums["raw base image sha256"] = in.BaseRawSHA256
	}
	for what, s := range sums {
		if !sha256Hex.MatchString(s) {
			return fmt.Errorf("%s: sha256 is %q, not 64 lowercase hex digits", what, s)
		}
	}
	return nil
}

// external are the parameters a person chose: the recipe, the lock, the
// options; what they resolved to is in resolvedDependencies.
func (in Input) external() map[string]any {
	p := map[string]any{
		"recipe":  map[string]string{"path": in.Recipe, "hash": in.RecipeHash},
		"cluster": in.Cluster,
		"image":   in.BaseSource,
	}
	if in.Lock != nil {
		p["lock"] = map[string]string{"path": in.Lock.Name, "sha256": in.Lock.SHA256}
	}
	k := map[string]string{}
	if in.K3sVersion != "" {
		k["version"] = in.K3sVersion
	}
	if in.K3sChannel != "" {
		k["channel"] = in.K3sChannel
	}
	p["k3s"] = k
	if len(in.Options) > 0 {
		p["options"] = in.Options
	}
	return p
}

func (in Input) dependencies() []descriptor {
	deps := []descriptor{{
		Name: "base-image", URI: in.Base.URI,
		Digest: map[string]string{"sha256": in.Base.SHA256},
	}}
	if in.BaseReleased != "" {
		deps[0].Annotations = map[string]string{"released": in.BaseReleased}
	}
	if in.BaseRawSHA256 != "" {
		deps = append(deps, descriptor{Name: "base-image.raw", Digest: map[string]string{"sha256": in.BaseRawSHA256}})
	}
	if s := in.InstallScript; s != nil {
		d := descriptor{Name: "k3s-install-script", URI: s.URI}
		if s.SHA256 != "" {
			d.Digest = map[string]string{"sha256": s.SHA256}
		}
		deps = append(deps, d)
	}
	air := append([]Artifact(nil), in.Airgap...)
	sort.Slice(air, func(i, j int) bool { return air[i].Name < air[j].Name })
	for _, a := range air {
		deps = append(deps, descriptor{Name: "airgap/" + a.Name, URI: a.URI, Digest: map[string]string{"sha256": a.SHA256}})
	}
	return deps
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Resubject is doc (a provenance.json that Build wrote, with an
// invocation id derived from its inputs) with subjects in place of its
// own: what Build gives for the same Input with those subjects. A merge
// rebuilds the provenance of the merged build with it, from one shard's,
// never by merging documents.
func Resubject(doc []byte, subjects []Artifact) ([]byte, error) {
	st, err := Parse(doc)
	if err != nil {
		return nil, err
	}
	in := Input{Subjects: subjects, Base: Artifact{SHA256: st.BaseSHA256()}}
	if err := in.check(); err != nil {
		return nil, fmt.Errorf("provenance: %w", err)
	}
	st.Subject = nil
	for _, s := range subjects {
		st.Subject = append(st.Subject, descriptor{Name: s.Name, Digest: map[string]string{"sha256": s.SHA256}})
	}
	sort.Slice(st.Subject, func(i, j int) bool { return st.Subject[i].Name < st.Subject[j].Name })
	return st.encode("")
}

// SameBuild reports whether two provenance documents describe builds of
// the same inputs and options (their subjects aside): the shards of one
// build do.
func SameBuild(a, b []byte) (bool, error) {
	var keys [2][]byte
	for i, doc := range [][]byte{a, b} {
		st, err := Parse(doc)
		if err != nil {
			return false, err
		}
		st.Subject, st.Predicate.RunDetails.Metadata.InvocationID = nil, ""
		if keys[i], err = json.Marshal(st); err != nil {
			return false, err
		}
	}
	return bytes.Equal(keys[0], keys[1]), nil
}

// Parse reads a provenance.json that Build wrote.
func Parse(b []byte) (*Statement, error) {
	var st Statement
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read provenance: %w", err)
	}
	if st.Type != StatementType || st.PredicateType != PredicateType {
		return nil, fmt.Errorf("read provenance: not an in-toto Statement v1 with SLSA provenance v1 (_type %q, predicateType %q)", st.Type, st.PredicateType)
	}
	return &st, nil
}

// Subjects are the statement's subjects: file name to SHA-256.
func (st *Statement) Subjects() map[string]string {
	m := map[string]string{}
	for _, s := range st.Subject {
		m[s.Name] = s.Digest["sha256"]
	}
	return m
}

// BaseSHA256 is the base image's SHA-256 as downloaded.
func (st *Statement) BaseSHA256() string {
	for _, d := range st.Predicate.BuildDefinition.ResolvedDependencies {
		if d.Name == "base-image" {
			return d.Digest["sha256"]
		}
	}
	return ""
}
