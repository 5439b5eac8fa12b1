package flashing

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// checkTargets refuses, before anything is written, a target that must not
// be written: a disk in use, the running system's, a fixed disk without
// AllowFixed, a disk too small, the image itself, one target named twice.
func checkTargets(opt Options, size int64, image, outDir string) error {
	var refusals []string
	seen := map[string]bool{}
	realOut := realPath(outDir)
	for _, t := range opt.Targets {
		if t.Target.IsFile() && outDir != "" && filepath.Dir(realPath(t.Target.Path)) == realOut {
			// The output directory's files are one published set
			// (outdir.go): a target there would overwrite a listed image.
			refusals = append(refusals, fmt.Sprintf("%s is in the output directory %s; write plain-file targets elsewhere", t.Target.Path, outDir))
			continue
		}
		key := t.Target.Path
		if t.Target.Disk != nil {
			key = t.Target.Disk.Dev
		}
		if seen[key] {
			refusals = append(refusals, fmt.Sprintf("%s is named twice", t.Target.Path))
			continue
		}
		seen[key] = true
		if t.Target.SameFile(image) {
			refusals = append(refusals, fmt.Sprintf("%s is the image being written", t.Target.Path))
			continue
		}
		if err := t.Target.Check(size, opt.AllowFixed); err != nil {
			refusals = append(refusals, err.Error())
		}
	}
	if len(refusals) > 0 {
		return fmt.Errorf("%w; nothing was written:\n  %s", ErrRefused, strings.Join(refusals, "\n  "))
	}
	return nil
}

// realPath is p absolute with its symlinks resolved, as far as it exists:
// a symlink elsewhere that points into the output directory is in it,
// also while what it points to does not exist yet (writing creates it).
func realPath(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	for range 40 { // the kernel's own limit on a chain of links
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			return r
		}
		link, err := os.Readlink(abs)
		if err != nil {
			break
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(filepath.Dir(abs), link)
		}
		abs = link
	}
	if r, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		return filepath.Join(r, filepath.Base(abs))
	}
	return abs
}
