package nodeimage

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/pibake/pibake/builder/base"
	"github.com/pibake/pibake/builder/diskimg"
	"github.com/pibake/pibake/internal/atomicfile"
)

// BaseRangeSums returns the bmap range sums of the base image outside its
// boot partition (what pibake never writes), computing them once per base
// image and keeping them in the cache.
func BaseRangeSums(ctx context.Context, c base.Cache, img *base.Image) (RangeSums, error) {
	path := filepath.Join(c.Dir, "ranges", img.SHA256+".json")
	var list []rangeSum
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &list) == nil {
		return fromList(list), nil
	}
	im, err := diskimg.Open(img.Path, false)
	if err != nil {
		return nil, err
	}
	boot := im.BootPartition()
	im.Close()
	all := RangeSums{}
	if _, err := Bmap(img.Path, nil, all); err != nil {
		return nil, fmt.Errorf("base image block map: %w", err)
	}
	// Only ranges that do not touch the boot partition are reusable.
	first, last := boot.Offset()/BlockSize, (boot.Offset()+boot.Size()-1)/BlockSize
	list = nil
	for r, sum := range all {
		if r[1] < first || r[0] > last {
			list = append(list, rangeSum{First: r[0], Last: r[1], SHA256: sum})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].First < list[j].First })
	b, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		atomicfile.WriteFile(path, b, 0o644) // only a speed-up if it fails
	}
	return fromList(list), ctx.Err()
}

type rangeSum struct {
	First  int64  `json:"first"`
	Last   int64  `json:"last"`
	SHA256 string `json:"sha256"`
}

func fromList(list []rangeSum) RangeSums {
	m := RangeSums{}
	for _, r := range list {
		m[[2]int64{r.First, r.Last}] = r.SHA256
	}
	return m
}
