// Package delta records what a build changed in each node's image
// relative to its base image, so that `pibake verify` can tell, with or
// without the base at hand, whether an image (or a card flashed with it)
// still holds the base's bytes everywhere pibake did not write, and name
// the byte ranges and partitions that differ.
//
// The record (delta.json in the output directory) holds, once per build,
// the SHA-256 of every 1 MiB chunk of the base image and its partition
// table, and per node the byte ranges (4 KiB blocks) where the node's
// image differs from the base, with a "masked" SHA-256 of each chunk
// those ranges touch: the chunk with pibake's blocks zeroed. Everything
// in it is derived from the public base image and the block numbers
// pibake wrote: no digest covers a byte pibake wrote, since those bytes
// hold the cluster token and Wi-Fi keys, and a digest of a small region
// holding a weak key would let anyone test guesses cheaply. pibake's own
// bytes are covered by the image's SHA-256 in SHA256SUMS and, file by
// file, by the SBOM.
package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/sparse"
)

// ChunkSize is the granularity of the base's digests: without the base at
// hand, verify names a changed byte to within a chunk. 1 MiB keeps the
// record at about 180 KB for a 2.7 GiB image.
const ChunkSize = 1 << 20

// BlockSize is the granularity of the ranges pibake wrote (bmaptool's and
// the page cache's block).
const BlockSize = 4096

// File is the record's name in the output directory.
const File = "delta.json"

// Record is delta.json: the base once, every node's changes.
type Record struct {
	Base  Base   `json:"base"`
	Nodes []Node `json:"nodes"`
}

// Base describes the base image every node is made from.
type Base struct {
	// SHA256 is the raw base image's SHA-256.
	SHA256     string      `json:"sha256"`
	Size       int64       `json:"size"`
	ChunkSize  int64       `json:"chunk_size"`
	Partitions []Partition `json:"partitions"`
	// Chunks are the SHA-256 of each ChunkSize bytes (the last may be
	// shorter).
	Chunks []string `json:"chunks"`
}

// Partition is one partition of the base's table, to name where a
// difference lies (a card's own table may be what was changed).
type Partition struct {
	Index      int    `json:"index"`
	Start      int64  `json:"start"`
	Size       int64  `json:"size"`
	FileSystem string `json:"filesystem,omitempty"`
	Label      string `json:"label,omitempty"`
}

// Node is what pibake changed in one node's image.
type Node struct {
	Hostname string `json:"hostname"`
	File     string `json:"file"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	// Written are the byte ranges where the image differs from the base.
	Written []Range `json:"written"`
	// Masked are the digests of the chunks Written touches, with the
	// written blocks zeroed.
	Masked []Chunk `json:"masked"`
}

// Range is the bytes [Start, End).
type Range struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// Chunk is a digest of chunk Index.
type Chunk struct {
	Index  int    `json:"index"`
	SHA256 string `json:"sha256"`
}

// Marshal returns the record's deterministic bytes (nodes by hostname).
func (r *Record) Marshal() ([]byte, error) {
	nodes := append([]Node(nil), r.Nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Hostname < nodes[j].Hostname })
	out := Record{Base: r.Base, Nodes: nodes}
	if out.Nodes == nil {
		out.Nodes = []Node{}
	}
	b, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Parse reads delta.json.
func Parse(b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read %s: %w", File, err)
	}
	if r.Base.ChunkSize <= 0 || int64(len(r.Base.Chunks)) != (r.Base.Size+r.Base.ChunkSize-1)/r.Base.ChunkSize {
		return nil, fmt.Errorf("read %s: the base's chunk list does not fit its size", File)
	}
	return &r, nil
}

// Find returns the node with this hostname, or nil.
func (r *Record) Find(host string) *Node {
	for i := range r.Nodes {
		if r.Nodes[i].Hostname == host {
			return &r.Nodes[i]
		}
	}
	return nil
}

// Merge adds the nodes of o (a shard's record) to r. Both must describe
// the same base; a node in both must be recorded the same.
func (r *Record) Merge(o *Record) error {
	if r.Base.SHA256 != o.Base.SHA256 {
		return fmt.Errorf("merge %s: the shards have different base images (%s, %s)", File, r.Base.SHA256, o.Base.SHA256)
	}
	for _, n := range o.Nodes {
		if prev := r.Find(n.Hostname); prev != nil {
			a, _ := json.Marshal(prev)
			b, _ := json.Marshal(n)
			if !bytes.Equal(a, b) {
				return fmt.Errorf("merge %s: node %s is recorded differently in two shards", File, n.Hostname)
			}
			continue
		}
		r.Nodes = append(r.Nodes, n)
	}
	return nil
}

var zeroChunkHex = func() string {
	s := sha256.Sum256(make([]byte, ChunkSize))
	return hex.EncodeToString(s[:])
}()

// HashBase reads the base image at path once and records its chunks.
// Holes are not read: a hole's chunk is all zeros.
func HashBase(ctx context.Context, path string) (*Base, error) {
	im, err := diskimg.Open(path, false)
	if err != nil {
		return nil, err
	}
	b := &Base{ChunkSize: ChunkSize, Size: im.Size()}
	for _, p := range im.Partitions {
		b.Partitions = append(b.Partitions, Partition{Index: p.Index, Start: p.Offset(), Size: p.Size(), FileSystem: p.FileSystem, Label: p.Label})
	}
	im.Close()
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	whole := sha256.New()
	buf := make([]byte, ChunkSize)
	for off := int64(0); off < b.Size; off += ChunkSize {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(ChunkSize, b.Size-off)
		if start, _ := sparse.NextExtent(f, off, off+n); start >= off+n && n == ChunkSize {
			b.Chunks = append(b.Chunks, zeroChunkHex)
			whole.Write(zeros)
			continue
		}
		if _, err := f.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read base image %s at %d: %w", path, off, err)
		}
		whole.Write(buf[:n])
		b.Chunks = append(b.Chunks, chunkSum(buf[:n]))
	}
	b.SHA256 = hex.EncodeToString(whole.Sum(nil))
	return b, nil
}

var zeros = make([]byte, ChunkSize)

// partitionOf names where offset lies.
func (b *Base) partitionOf(off int64) string {
	for _, p := range b.Partitions {
		if off >= p.Start && off < p.Start+p.Size {
			s := fmt.Sprintf("partition %d", p.Index)
			if p.FileSystem != "" || p.Label != "" {
				s += fmt.Sprintf(" (%s %s)", p.FileSystem, p.Label)
			}
			return s
		}
	}
	if off < SectorSize {
		return "the partition table (MBR)"
	}
	return "outside every partition"
}

// SectorSize is the image's sector size: the MBR is the first one.
const SectorSize = 512
