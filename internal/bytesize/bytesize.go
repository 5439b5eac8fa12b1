// Package bytesize formats sizes for people, the one way pibake writes
// them everywhere: logs, tables, block maps and errors.
package bytesize

import "fmt"

// Format is a size in the largest binary unit it reaches: "1.50 GiB",
// "12.0 MiB", "3.0 KiB", "512 B"; "?" for a negative size.
func Format(n int64) string {
	switch {
	case n < 0:
		return "?"
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// MiB is a size in MiB with one decimal, "1536.0 MiB": for table columns
// whose figures are compared down the column.
func MiB(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
