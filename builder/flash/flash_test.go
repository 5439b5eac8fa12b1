package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pibake/pibake/internal/testimage"
)

// testImage writes an image of size bytes with data at a few places and
// holes elsewhere, and returns it as a Source whose ranges are those
// places (as a block map would list them), and its bytes.
func testImage(t *testing.T, size int64) (*Source, []byte) {
	t.Helper()
	img := make([]byte, size)
	rng := rand.New(rand.NewSource(1))
	var ranges []Range
	for _, r := range [][2]int64{{0, 2 * BlockSize}, {64 << 10, 1 << 20}, {3 << 20, 3<<20 + 9*chunkSize/4}, {size - BlockSize, size}} {
		rng.Read(img[r[0]:r[1]])
		sum := sha256.Sum256(img[r[0]:r[1]])
		ranges = append(ranges, Range{Off: r[0], End: r[1], SHA256: hex.EncodeToString(sum[:])})
	}
	whole := sha256.Sum256(img)
	return &Source{Name: "test", R: bytes.NewReader(img), Size: size, Ranges: ranges, SHA256: hex.EncodeToString(whole[:])}, img
}

const testSize = 32 << 20

// TestWriteFiles writes one image to several plain files at once: each
// is the image byte for byte, verified, with the image's SHA-256.
func TestWriteFiles(t *testing.T) {
	src, img := testImage(t, testSize)
	dir := t.TempDir()
	old := filepath.Join(dir, "old.img")
	if err := os.WriteFile(old, bytes.Repeat([]byte{0xff}, 40<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	paths := []string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img"), old}
	results := writeAll(t, context.Background(), src, paths...)
	for i, res := range results {
		if res.State != Verified || res.Err != nil || res.SHA256 != src.SHA256 {
			t.Errorf("%s: %s, %v, sha256 %s; want verified, %s", paths[i], res.State, res.Err, res.SHA256, src.SHA256)
		}
		got, err := os.ReadFile(paths[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, img) {
			t.Errorf("%s differs from the image (%d bytes, want %d)", paths[i], len(got), len(img))
		}
		if fi, _ := os.Stat(paths[i]); fi.Mode().Perm() != 0o600 && paths[i] != old {
			t.Errorf("%s: mode %v; want 0600 (node images hold the token)", paths[i], fi.Mode().Perm())
		}
	}
}

func writeAll(t *testing.T, ctx context.Context, src *Source, paths ...string) []Result {
	t.Helper()
	results := make([]Result, len(paths))
	var wg sync.WaitGroup
	for i, p := range paths {
		tg, err := Host.Inspect(p)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { results[i] = Write(ctx, src, tg, nil) })
	}
	wg.Wait()
	return results
}

// TestReadBackCatchesCorruption flips one byte on the target after it
// is written: the read-back must say which range differs, and the target
// must be left unbootable.
func TestReadBackCatchesCorruption(t *testing.T) {
	src, _ := testImage(t, testSize)
	// 2 MiB + 7 is between two ranges: zeros in the image, which the
	// read-back reads too.
	for _, at := range []int64{100, 2<<20 + 7, 3<<20 + 5, testSize - 1} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "t.img")
			flipByte(t, at)
			res := writeAll(t, context.Background(), src, target)[0]
			if res.State != Failed || res.Err == nil || !strings.Contains(res.Err.Error(), "reads back different") {
				t.Fatalf("corrupted at %d: %s, %v; want failed, reads back different", at, res.State, res.Err)
			}
			checkHeadZero(t, target)
			if !strings.Contains(res.Boot, "will not boot") {
				t.Errorf("Boot = %q", res.Boot)
			}
		})
	}
}

// flipByte makes the next write's target have byte at inverted once it
// is written.
func flipByte(t *testing.T, at int64) {
	afterWrite = func(path string) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		b := make([]byte, 1)
		f.ReadAt(b, at)
		b[0] ^= 0xff
		f.WriteAt(b, at)
		f.Sync()
	}
	t.Cleanup(func() { afterWrite = nil })
}

func checkHeadZero(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, headSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, make([]byte, headSize)) {
		t.Errorf("%s: the first block is not zeroed: a half-written image could boot", path)
	}
}

// TestSourceEndsEarly: an image shorter than its ranges say is a failed
// write, not zeros written as if they were the image.
func TestSourceEndsEarly(t *testing.T) {
	src, img := testImage(t, testSize)
	short := *src
	short.R = bytes.NewReader(img[:testSize/2])
	res := writeAll(t, context.Background(), &short, filepath.Join(t.TempDir(), "t.img"))[0]
	if res.State != Failed || res.Err == nil || !strings.Contains(res.Err.Error(), "image ends at byte") {
		t.Fatalf("got %s, %v; want failed, image ends", res.State, res.Err)
	}
}

// The tests below write real block devices: loop devices, and
// device-mapper devices over them. They need root; under CI=true missing
// support fails them.

// needRoot skips (or under CI fails) a test that needs root, losetup and
// loop devices.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testimage.Missing(t, "loop device tests need root")
	}
	testimage.Tool(t, "losetup")
}

// loopDevice attaches a sparse file of size bytes as a loop device.
func loopDevice(t *testing.T, size int64, losetupArgs ...string) string {
	t.Helper()
	needRoot(t)
	backing := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(testimage.Tool(t, "losetup"), append(losetupArgs, "--find", "--show", backing)...).CombinedOutput()
	if err != nil {
		testimage.Missing(t, fmt.Sprintf("losetup %v --find --show: %v: %s (no loop device support?)", losetupArgs, err, out))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// smallDisk is a loop device of size bytes whose backing file lies on a
// tmpfs of only room bytes: writes past that fail with ENOSPC (an I/O
// error on the device), like a card that dies mid-write. (Device-mapper
// error targets would do too, but not every kernel the tests run on has
// device-mapper; loop and tmpfs are everywhere.)
func smallDisk(t *testing.T, size, room int64) string {
	t.Helper()
	needRoot(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", room), "tmpfs", mnt).CombinedOutput(); err != nil {
		testimage.Missing(t, fmt.Sprintf("mount tmpfs: %v: %s", err, out))
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	backing := filepath.Join(mnt, "backing")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// TestWriteBlockDevices writes loop devices at once, one of which fails
// 6 MiB in (its backing store is full): the good ones are verified and
// hold the image, the bad one fails on its own with its first block
// zeroed.
func TestWriteBlockDevices(t *testing.T) {
	src, img := testImage(t, testSize)
	good := []string{loopDevice(t, 64<<20), loopDevice(t, testSize)}
	for _, dev := range good {
		usedCard(t, dev) // so that the holes, too, must be written to match
	}
	bad := smallDisk(t, 64<<20, 6<<20)
	oldImage(t, bad)
	results := writeAll(t, context.Background(), src, append(good, bad)...)
	for i, dev := range good {
		res := results[i]
		if res.State != Verified || res.SHA256 != src.SHA256 {
			t.Errorf("%s: %s, %v", dev, res.State, res.Err)
			continue
		}
		got := readDev(t, dev, testSize)
		if !bytes.Equal(got, img) {
			t.Errorf("%s differs from the image", dev)
		}
		if res.Target.Disk == nil || res.Target.Disk.Transport != "loop" || !strings.Contains(res.Target.Disk.Serial, "backing") {
			t.Errorf("%s described as %+v", dev, res.Target.Disk)
		}
	}
	res := results[2]
	if res.State != Failed || res.Err == nil || !strings.Contains(res.Err.Error(), "at byte") || res.Written >= src.Mapped() {
		t.Fatalf("%s (full after 6 MiB): %s, %v, %d of %d bytes written; want failed mid-write", bad, res.State, res.Err, res.Written, src.Mapped())
	}
	checkHeadZero(t, bad)
	t.Logf("failing target: %v; %s", res.Err, res.Boot)
}

// usedCard fills dev with 0xA5, as a used card is full of old data: an
// image on it is identical only if the bytes between the image's ranges
// were zeroed too.
func usedCard(t *testing.T, dev string) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatal(err)
	}
	b := bytes.Repeat([]byte{0xa5}, 1<<20)
	for off := int64(0); off < end; off += int64(len(b)) {
		if _, err := f.WriteAt(b[:min(int64(len(b)), end-off)], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestZerosWritten: a device that refuses BLKZEROOUT gets the zeros
// between the ranges written; a used card still ends up as the image.
func TestZerosWritten(t *testing.T) {
	src, img := testImage(t, testSize)
	dev := loopDevice(t, 64<<20)
	usedCard(t, dev)
	writeZerosOnly = true
	t.Cleanup(func() { writeZerosOnly = false })
	res := writeAll(t, context.Background(), src, dev)[0]
	if res.State != Verified || res.SHA256 != src.SHA256 {
		t.Fatalf("%s: %s, %v", dev, res.State, res.Err)
	}
	if !bytes.Equal(readDev(t, dev, testSize), img) {
		t.Errorf("%s differs from the image", dev)
	}
}

// oldImage puts a partition table's worth of non-zero bytes at the start
// of dev, as a card that held a bootable image has.
func oldImage(t *testing.T, dev string) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x55, 0xaa}, headSize/2), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func readDev(t *testing.T, dev string, n int64) []byte {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// slowReader reads an image at most one chunk per delay: a slow card,
// seen from the writer's side.
type slowReader struct {
	r     *bytes.Reader
	delay time.Duration
}

func (s slowReader) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(s.delay)
	return s.r.ReadAt(p, off)
}

// TestInterrupted cancels a slow write to a loop device: Write returns
// soon after, the target is reported interrupted and left with its first
// block zeroed. The bound asserted, 2 s (the issue's), is loose: a chunk
// takes 0.2 s here, and the whole write would take over 2 s.
func TestInterrupted(t *testing.T) {
	src, img := testImage(t, testSize)
	slow := *src
	slow.R = slowReader{r: bytes.NewReader(img), delay: 200 * time.Millisecond}
	dev := loopDevice(t, 64<<20)
	oldImage(t, dev)
	tg, err := Host.Inspect(dev)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result)
	go func() { done <- Write(ctx, &slow, tg, nil) }()
	time.Sleep(500 * time.Millisecond)
	cancel()
	start := time.Now()
	res := <-done
	took := time.Since(start)
	t.Logf("returned %s after the interrupt: %s; %s", took.Round(time.Millisecond), res.State, res.Boot)
	if took > 2*time.Second {
		t.Errorf("Write took %s to stop after the interrupt; want < 2 s", took)
	}
	if res.State != Interrupted || res.Written == 0 || res.Written >= src.Mapped() {
		t.Errorf("state %s (%v), %d of %d bytes written; want interrupted mid-write", res.State, res.Err, res.Written, src.Mapped())
	}
	checkHeadZero(t, dev)
}

// TestMountedLoopRefused mounts a loop device for real: it is described
// as in use, refused, and the kernel refuses exclusive access too.
func TestMountedLoopRefused(t *testing.T) {
	dev := loopDevice(t, 64<<20)
	if out, err := exec.Command(testimage.Tool(t, "mkfs.ext4"), "-q", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		testimage.Missing(t, fmt.Sprintf("mount %s: %v: %s", dev, err, out))
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	tg, err := Host.Inspect(dev)
	if err != nil {
		t.Fatal(err)
	}
	err = tg.Check(1<<20, true)
	if err == nil || !strings.Contains(err.Error(), "is mounted on "+mnt) {
		t.Errorf("Check of a mounted %s = %v; want in use, mounted on %s", dev, err, mnt)
	}
	src, _ := testImage(t, testSize)
	res := Write(context.Background(), src, tg, nil)
	if res.State != Failed || !strings.Contains(fmt.Sprint(res.Err), "refused exclusive access") || res.Boot != "untouched" {
		t.Errorf("Write to a mounted %s: %s, %v, %q; want refused exclusive access, untouched", dev, res.State, res.Err, res.Boot)
	}
}

// TestTooSmallRefused: a real device smaller than the image is refused by
// the checks, and by Write itself (what the open device says), before
// anything is written to it.
func TestTooSmallRefused(t *testing.T) {
	src, _ := testImage(t, testSize)
	dev := loopDevice(t, testSize/2)
	oldImage(t, dev)
	tg, err := Host.Inspect(dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.Check(testSize, true); err == nil || !strings.Contains(err.Error(), "holds 16.0 MiB, less than the image's 32.0 MiB") {
		t.Errorf("Check of a 16 MiB %s for a 32 MiB image = %v", dev, err)
	}
	res := Write(context.Background(), src, tg, nil)
	if res.State != Failed || res.Boot != "untouched" || !strings.Contains(fmt.Sprint(res.Err), "less than the image's") {
		t.Errorf("Write to a too small %s: %s, %v, %q", dev, res.State, res.Err, res.Boot)
	}
	if b := readDev(t, dev, 2); b[0] != 0x55 {
		t.Errorf("%s was written to", dev)
	}
}

// TestSwappedDeviceNotWritten: a real device whose serial changes between
// Inspect and Write (a stick swapped while the prompt was open: same name,
// same number) is not written. The loop device is described from a fake
// sysfs, where the swap is a changed udev serial.
func TestSwappedDeviceNotWritten(t *testing.T) {
	dev := loopDevice(t, 64<<20)
	oldImage(t, dev)
	fi, err := os.Stat(dev)
	if err != nil {
		t.Fatal(err)
	}
	num, err := blockDevice(fi)
	if err != nil {
		t.Fatal(err)
	}
	s := fakeSystem(t, []fakeDisk{{name: "sdb", dev: num, sectors: 64 << 20 / 512, usb: true,
		udev: "E:ID_MODEL=Extreme_Pro\nE:ID_SERIAL_SHORT=AA01234\nE:ID_BUS=usb\n"}}, mi("8:2", "/", "ext4", "/dev/sda2"), "")
	tg, err := s.Inspect(dev)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := testImage(t, testSize)
	if err := tg.Check(src.Size, false); err != nil {
		t.Fatal(err)
	}
	writeFile(t, s, "/run/udev/data/b"+num, "E:ID_MODEL=Extreme_Pro\nE:ID_SERIAL_SHORT=ZZ99999\nE:ID_BUS=usb\n")
	res := Write(context.Background(), src, tg, nil)
	if res.State != Failed || res.Boot != "untouched" || !strings.Contains(fmt.Sprint(res.Err), "the device at "+dev+" is not the one confirmed: it is Extreme Pro, serial ZZ99999") {
		t.Errorf("Write after the swap: %s, %v, %q; want failed, not the one confirmed, untouched", res.State, res.Err, res.Boot)
	}
	if b := readDev(t, dev, 2); b[0] != 0x55 {
		t.Errorf("%s was written to", dev)
	}
}

// TestBlockSizeMismatch: an image whose ranges split the device's blocks
// (a .bmap of 512-byte blocks, a disk of 4096-byte sectors) is refused
// before its first block is zeroed, not half-way through.
func TestBlockSizeMismatch(t *testing.T) {
	src, img := testImage(t, testSize)
	sum := sha256.Sum256(img[BlockSize+512 : 2*BlockSize])
	odd := *src
	odd.Ranges = append([]Range{{Off: 0, End: BlockSize, SHA256: src.Ranges[0].SHA256}, {Off: BlockSize + 512, End: 2 * BlockSize, SHA256: hex.EncodeToString(sum[:])}}, src.Ranges[1:]...)
	dev := loopDevice(t, 64<<20, "--sector-size", "4096")
	oldImage(t, dev)
	res := writeAll(t, context.Background(), &odd, dev)[0]
	if res.State != Failed || res.Boot != "untouched" || !strings.Contains(fmt.Sprint(res.Err), "has 4096-byte blocks, and test has a range boundary at byte 4608, inside one; nothing written") {
		t.Errorf("Write of 512-byte ranges to a 4096-byte-sector %s: %s, %v, %q; want failed, untouched", dev, res.State, res.Err, res.Boot)
	}
	if b := readDev(t, dev, 2); b[0] != 0x55 {
		t.Errorf("%s was written to", dev)
	}
}

// TestInspectNewFile: a target that does not exist is a new image file,
// except under /dev, where it is a mistyped device name; /dev/shm, the
// shared-memory tmpfs, holds files like any directory.
func TestInspectNewFile(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "pibake-flash-")
	if err != nil {
		testimage.Missing(t, fmt.Sprintf("a directory in /dev/shm: %v", err))
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	tests := []struct {
		path    string
		refused bool
	}{
		{filepath.Join(t.TempDir(), "card.img"), false},
		{filepath.Join(shm, "card.img"), false},
		{"/dev/sdzz", true},
		{"/dev/disk/by-id/usb-No_Such_Card-0:0", true},
	}
	for _, tt := range tests {
		tg, err := Host.Inspect(tt.path)
		switch {
		case tt.refused && (err == nil || !strings.Contains(err.Error(), "no such device")):
			t.Errorf("Inspect(%s) = %+v, %v; want refused: no such device", tt.path, tg, err)
		case !tt.refused && (err != nil || tg.Path != tt.path || tg.Disk != nil):
			t.Errorf("Inspect(%s) = %+v, %v; want a new file", tt.path, tg, err)
		}
	}
}
