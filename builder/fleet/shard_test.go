package fleet

import (
	"testing"
)

func TestParseShard(t *testing.T) {
	for s, ok := range map[string]bool{"1/1": true, "2/4": true, "4/4": true, "0/4": false, "5/4": false, "1/0": false, "a/b": false, "1/2x": false, "": false} {
		if _, err := ParseShard(s); (err == nil) != ok {
			t.Errorf("ParseShard(%q): %v", s, err)
		}
	}
	// Balanced: 7 nodes in 3 shards are 3, 2, 2, and every node in one.
	seen := map[int]int{}
	for idx := 1; idx <= 3; idx++ {
		n := 0
		for i := 0; i < 7; i++ {
			if (Shard{Index: idx, Count: 3}).Has(i) {
				n++
				seen[i]++
			}
		}
		if n < 2 || n > 3 {
			t.Errorf("shard %d/3 of 7 nodes has %d", idx, n)
		}
	}
	for i := 0; i < 7; i++ {
		if seen[i] != 1 {
			t.Errorf("node %d is in %d shards", i, seen[i])
		}
	}
}
