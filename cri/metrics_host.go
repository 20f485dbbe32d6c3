package cri

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// fsUsage is what a writable layer takes of its file system.
type fsUsage struct{ bytes, inodes uint64 }

// fsFacts is a file system's size, as cAdvisor's fs metrics report it.
type fsFacts struct{ capacity, inodes, inodesFree uint64 }

// statFS reads the file system under path and names its device; zero
// facts if it cannot be read, which leaves the metrics at 0 rather than
// failing the scrape.
func statFS(path string) (fsFacts, string) {
	var sfs unix.Statfs_t
	var st unix.Stat_t
	if unix.Statfs(path, &sfs) != nil || unix.Stat(path, &st) != nil {
		return fsFacts{}, path
	}
	f := fsFacts{capacity: sfs.Blocks * uint64(sfs.Bsize), inodes: sfs.Files, inodesFree: sfs.Ffree}
	return f, blockDevice(uint64(unix.Major(st.Dev)), uint64(unix.Minor(st.Dev)))
}

// blockDevice is the /dev name of a block device, as cAdvisor labels
// devices, or major:minor when sysfs does not know it (an overlay, a tmpfs).
func blockDevice(major, minor uint64) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", major, minor))
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(l, "DEVNAME="); ok {
				return "/dev/" + name
			}
		}
	}
	return fmt.Sprintf("%d:%d", major, minor)
}
