package flash

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pibake/pibake/internal/bytesize"
	"github.com/pibake/pibake/internal/files"
)

// System is where the running system's device facts are read: sysfs,
// /proc and udev's database under Root ("/" on a real machine). Tests
// point Root at a fake tree, so the refusal of the disk holding "/" is
// tested without ever opening a real system disk.
type System struct {
	Root string
}

// Host is the running machine.
var Host = System{Root: "/"}

func (s System) path(p string) string { return filepath.Join(s.Root, filepath.FromSlash(p)) }

// Disk is what pibake knows about a whole-disk block device before it
// writes to it: enough to show the user which disk it is and to refuse the
// wrong one.
type Disk struct {
	Path string // as given, e.g. /dev/sdb
	Name string // the kernel's name, e.g. sdb
	Dev  string // major:minor
	// Model and Serial identify the hardware (udev's ID_MODEL and
	// ID_SERIAL_SHORT, else sysfs); a loop device's serial is its backing
	// file.
	Model, Serial string
	// Transport is how it is attached: usb, mmc, nvme, sata, loop, ... or
	// "" when unknown.
	Transport string
	Size      int64
	// Removable: the kernel's removable flag, or attached by USB or as an
	// SD/MMC card. Everything else counts as a fixed disk.
	Removable  bool
	Partitions []Partition
	// InUse lists why the disk may not be written: mounts, swaps,
	// holders (device-mapper, RAID, LVM), each naming the partition.
	InUse []string
	// System names the mount points of the running system ("/", /boot,
	// ...) that live on this disk.
	System []string
}

// Partition is one partition of a disk, as the kernel sees it now.
type Partition struct {
	Name  string
	Size  int64
	Label string // from udev, when it knows
	FS    string // file system type, from udev
}

// systemMounts are the mount points whose disk is "the running system".
var systemMounts = []string{"/", "/boot", "/boot/firmware", "/boot/efi", "/usr", "/var"}

// Describe reads what sysfs, mountinfo, swaps and udev say about the block
// device dev ("major:minor"), opened as path.
func (s System) Describe(path, dev string) (*Disk, error) {
	sysDir, err := s.blockDir(dev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	name := filepath.Base(sysDir)
	if files.Exists(filepath.Join(sysDir, "partition")) {
		parent := filepath.Base(filepath.Dir(sysDir))
		return nil, fmt.Errorf("%s is partition %s of /dev/%s; name the whole disk (/dev/%s): pibake writes a whole disk image", path, name, parent, parent)
	}
	d := &Disk{Path: path, Name: name, Dev: dev}
	s.identify(d, sysDir)
	devs := s.partitions(d, sysDir)
	if err := s.findUses(d, devs); err != nil {
		return nil, err
	}
	return d, nil
}

// identify fills in what the disk is: its size, model, serial, transport,
// and whether it is removable.
func (s System) identify(d *Disk, sysDir string) {
	name := d.Name
	d.Size = readInt(filepath.Join(sysDir, "size")) * 512 // sysfs counts 512-byte sectors whatever the device's block size
	udev := s.udev(d.Dev)
	d.Model = firstOf(strings.ReplaceAll(udev["ID_MODEL"], "_", " "), readLine(filepath.Join(sysDir, "device", "model")), readLine(filepath.Join(sysDir, "device", "name")))
	d.Serial = firstOf(udev["ID_SERIAL_SHORT"], readLine(filepath.Join(sysDir, "device", "serial")))
	d.Transport = udev["ID_BUS"]
	real, _ := filepath.EvalSymlinks(sysDir)
	switch {
	case strings.HasPrefix(name, "loop"):
		d.Transport, d.Model = "loop", "loop device"
		d.Serial = readLine(filepath.Join(sysDir, "loop", "backing_file"))
	case strings.Contains(real, "/usb"):
		d.Transport = "usb"
	case strings.HasPrefix(name, "mmcblk"):
		d.Transport = "mmc"
	case strings.HasPrefix(name, "nvme"):
		d.Transport = "nvme"
	}
	d.Removable = readLine(filepath.Join(sysDir, "removable")) == "1" || d.Transport == "usb" || d.Transport == "mmc"
}

// partitions lists the disk's partitions and what holds the disk or them,
// and returns the disk and its partitions by major:minor.
func (s System) partitions(d *Disk, sysDir string) map[string]string {
	devs := map[string]string{d.Dev: d.Name}
	entries, _ := os.ReadDir(sysDir)
	for _, e := range entries {
		pdir := filepath.Join(sysDir, e.Name())
		if !files.Exists(filepath.Join(pdir, "partition")) {
			continue
		}
		pdev := readLine(filepath.Join(pdir, "dev"))
		pu := s.udev(pdev)
		d.Partitions = append(d.Partitions, Partition{Name: e.Name(), Size: readInt(filepath.Join(pdir, "size")) * 512, Label: pu["ID_FS_LABEL"], FS: pu["ID_FS_TYPE"]})
		devs[pdev] = e.Name()
		for _, h := range list(filepath.Join(pdir, "holders")) {
			d.InUse = append(d.InUse, fmt.Sprintf("%s is held by %s (device-mapper, RAID or LVM)", e.Name(), h))
		}
	}
	for _, h := range list(filepath.Join(sysDir, "holders")) {
		d.InUse = append(d.InUse, fmt.Sprintf("%s is held by %s (device-mapper, RAID or LVM)", d.Name, h))
	}
	return devs
}

// findUses records where the disk or its partitions (devs) are mounted
// or used as swap, and which of those mounts are the running system's.
func (s System) findUses(d *Disk, devs map[string]string) error {
	mounts, err := s.mounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		for _, disk := range s.disksUnder(m) {
			if disk != d.Name {
				continue
			}
			d.InUse = append(d.InUse, fmt.Sprintf("%s is mounted on %s", m.source, m.point))
			if slices.Contains(systemMounts, m.point) && !slices.Contains(d.System, m.point) {
				d.System = append(d.System, m.point)
			}
		}
	}
	for _, sw := range s.swaps() {
		if n := filepath.Base(sw); slices.Contains(mapValues(devs), n) {
			d.InUse = append(d.InUse, fmt.Sprintf("%s is in use as swap", sw))
		}
	}
	return nil
}

// Refusal says why pibake must not write to d, or nil. The disk holding
// the running system is refused whatever the flags say.
func (d *Disk) Refusal(size int64, allowFixed bool) error {
	switch {
	case len(d.System) > 0:
		return fmt.Errorf("%s (%s) holds the running system (%s); pibake never writes to it", d.Path, d.describe(), strings.Join(d.System, ", "))
	case len(d.InUse) > 0:
		return fmt.Errorf("%s (%s) is in use: %s; unmount it (and stop what holds it) first", d.Path, d.describe(), strings.Join(d.InUse, "; "))
	case !d.Removable && !allowFixed:
		kind := "a fixed disk"
		if d.Transport != "" {
			kind = "a fixed " + d.Transport + " disk"
		}
		return fmt.Errorf("%s (%s) is %s, not a removable or USB one; if you really mean it, name it with --allow-fixed", d.Path, d.describe(), kind)
	case d.Size < size:
		return fmt.Errorf("%s (%s) holds %s, less than the image's %s; use a larger card or disk", d.Path, d.describe(), bytesize.Format(d.Size), bytesize.Format(size))
	}
	return nil
}

// describe is the disk in a few words: model, serial, size.
func (d *Disk) describe() string {
	parts := []string{}
	if d.Model != "" {
		parts = append(parts, d.Model)
	}
	if d.Serial != "" {
		parts = append(parts, "serial "+d.Serial)
	}
	parts = append(parts, bytesize.Format(d.Size))
	return strings.Join(parts, ", ")
}

// String is the disk in a few words, for the confirmation prompt.
func (d *Disk) String() string { return d.describe() }

// blockDir is sysfs's directory for a block device, e.g.
// /sys/devices/.../block/sdb.
func (s System) blockDir(dev string) (string, error) {
	link := s.path("/sys/dev/block/" + dev)
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", fmt.Errorf("no block device %s in sysfs: %w", dev, err)
	}
	return dir, nil
}

// disksUnder lists the block devices a mount's file system lives on:
// the device mounted (a partition counts as its disk) and, through
// device-mapper or RAID slaves, every device below it down to the whole
// disks. Every one walked is listed, not only the disks at the bottom: a
// target named as /dev/dm-0 or /dev/md0 holding "/" is the running
// system too. The mounted device is found by major:minor or (btrfs,
// whose mounts show an anonymous 0:N) by the source's name.
func (s System) disksUnder(m mount) []string {
	var dirs []string
	if dir, err := s.blockDir(m.dev); err == nil {
		dirs = append(dirs, dir)
	} else if strings.HasPrefix(m.source, "/dev/") {
		if dir, err := filepath.EvalSymlinks(s.path("/sys/class/block/" + filepath.Base(m.source))); err == nil {
			dirs = append(dirs, dir)
		}
	}
	var disks []string
	seen := map[string]bool{}
	for len(dirs) > 0 {
		dir := dirs[0]
		dirs = dirs[1:]
		if seen[dir] {
			continue
		}
		seen[dir] = true
		if files.Exists(filepath.Join(dir, "partition")) {
			dir = filepath.Dir(dir)
		}
		if name := filepath.Base(dir); !slices.Contains(disks, name) {
			disks = append(disks, name)
		}
		for _, sl := range list(filepath.Join(dir, "slaves")) {
			if d, err := filepath.EvalSymlinks(filepath.Join(dir, "slaves", sl)); err == nil {
				dirs = append(dirs, d)
			}
		}
	}
	return disks
}

type mount struct {
	dev, point, source string
}

// mounts reads the mount table (mountinfo: "id parent maj:min root point
// opts... - fstype source superopts").
func (s System) mounts() ([]mount, error) {
	f, err := os.Open(s.path("/proc/self/mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	defer f.Close()
	var ms []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		ms = append(ms, mount{dev: fields[2], point: unescape(fields[4]), source: unescape(fields[sep+2])})
	}
	return ms, sc.Err()
}

// swaps lists the swap devices and files in use.
func (s System) swaps() []string {
	b, err := os.ReadFile(s.path("/proc/swaps"))
	if err != nil {
		return nil
	}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 0 {
			out = append(out, unescape(f[0]))
		}
	}
	return out
}

// udev reads udev's properties of a device (E:KEY=VALUE lines), if any.
func (s System) udev(dev string) map[string]string {
	props := map[string]string{}
	b, err := os.ReadFile(s.path("/run/udev/data/b" + dev))
	if err != nil {
		return props
	}
	for _, line := range strings.Split(string(b), "\n") {
		if kv, ok := strings.CutPrefix(line, "E:"); ok {
			if k, v, ok := strings.Cut(kv, "="); ok {
				props[k] = v
			}
		}
	}
	return props
}

// unescape undoes the octal escapes of mountinfo and swaps (\040 for a
// space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readLine(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readInt(p string) int64 {
	n, _ := strconv.ParseInt(readLine(p), 10, 64)
	return n
}

func list(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// ErrLinuxOnly is returned for a block device target on a system other
// than Linux.
var ErrLinuxOnly = errors.New("flash to block devices is supported on Linux only; use bmaptool or Raspberry Pi Imager with the built .img (plain files as targets work everywhere)")
