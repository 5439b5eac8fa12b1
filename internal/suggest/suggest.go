// Package suggest finds the word a typo was meant to be, for "did you
// mean" in messages.
package suggest

// Nearest is the candidate fewest edits from word, when that is at most
// max edits; "" when none is that near.
func Nearest(word string, candidates []string, max int) string {
	best, dist := "", max+1
	for _, c := range candidates {
		if d := Distance(word, c); d < dist || (d == dist && best != "" && c < best) {
			best, dist = c, d
		}
	}
	return best
}

// Distance is the edit distance of two words: insertions, deletions and
// substitutions of bytes, and a swap of two neighbours counted as one
// (biuld, build).
func Distance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
