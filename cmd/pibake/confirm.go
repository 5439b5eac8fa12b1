package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pibake/pibake/builder/flashing"
)

var errDryRun = errors.New("dry run")

// allNewFiles reports whether every target is a new (or empty) plain
// file: nothing is lost by writing them, so there is nothing to confirm.
// A file already there is asked about like a device: it may be a backup
// image, or a recipe named by mistake (pi-01=lab.hcl).
func allNewFiles(targets []flashing.Target) bool {
	for _, t := range targets {
		if !t.Target.IsFile() || t.Target.Existing > 0 {
			return false
		}
	}
	return true
}

// confirmFlash is flash's Confirm: it shows what will be written where,
// then stops for --dry-run, goes on with --yes or when only new files are
// written, and otherwise asks for "yes" on a terminal.
func confirmFlash(o *flashOptions, out outputs) func(int64, []flashing.Target) error {
	return func(size int64, targets []flashing.Target) error {
		flashing.WritePlan(out.stderr, size, targets)
		switch {
		case o.dryRun:
			return errDryRun
		case o.yes || allNewFiles(targets):
			return nil
		case !isTerminal(os.Stdin) || !out.stderrIsTerminal:
			return errors.New("not on a terminal: pass --yes to confirm overwriting these devices and files")
		}
		fmt.Fprintf(out.stderr, "Everything on the devices and files above will be overwritten. Type yes to write: ")
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if strings.TrimSpace(line) != "yes" {
			return errors.New("not confirmed; nothing was written")
		}
		return nil
	}
}
