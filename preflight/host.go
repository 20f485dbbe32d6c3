package preflight

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Node is the Host of the node this process runs on.
type Node struct{}

func (Node) ReadFile(name string) ([]byte, error)       { return os.ReadFile(name) }
func (Node) Stat(name string) (fs.FileInfo, error)      { return os.Stat(name) }
func (Node) ReadDir(name string) ([]fs.DirEntry, error) { return os.ReadDir(name) }

func (Node) EffectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, err
	}
	return uint64(data[1].Effective)<<32 | uint64(data[0].Effective), nil
}

func (Node) FreeBytes(path string) (uint64, error) {
	for {
		var st unix.Statfs_t
		err := unix.Statfs(path, &st)
		if err == nil {
			return st.Bavail * uint64(st.Bsize), nil
		}
		// A directory ketchd will make: what counts is where it will be.
		if !errors.Is(err, unix.ENOENT) || path == filepath.Dir(path) {
			return 0, err
		}
		path = filepath.Dir(path)
	}
}

func (Node) KernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func (Node) SocketServed(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
