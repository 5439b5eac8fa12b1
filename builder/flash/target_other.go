//go:build !linux

package flash

import "os"

// blockDevice refuses block devices: writing them (exclusive open,
// unbuffered I/O, the checks of what is mounted) is Linux-only for now.
func blockDevice(os.FileInfo) (string, error) { return "", ErrLinuxOnly }

func openTarget(t Target, size int64) (*writer, error) {
	if !t.IsFile() {
		return nil, ErrLinuxOnly
	}
	w, err := openFile(t.Path, size)
	if err != nil {
		return nil, err
	}
	w.t = t
	return w, nil
}

// dropCache syncs a file; elsewhere than Linux its pages may still be
// cached when it is read back.
func (w *writer) dropCache() error { return w.f.Sync() }

func freeBuf([]byte) {}

// zeroOut writes zeros; only block devices (Linux-only) are zeroed.
func (w *writer) zeroOut(off, n int64) error { return w.writeZeros(off, n) }
