package oci

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Features are what this node's kernel lets ketch give containers, as the
// CRI advertises them to kubelet.
type Features struct {
	// RecursiveReadOnlyMounts: mount_setattr(AT_RECURSIVE,
	// MOUNT_ATTR_RDONLY), Linux 5.12, behind runc's "rro".
	RecursiveReadOnlyMounts bool
	// UserNamespaces: pods with a user namespace of their own, whose image
	// layers ketch mounts idmapped (overlayfs idmapped lower layers, Linux
	// 5.19), on the node's network too (sysfs bound read-only).
	UserNamespaces bool
}

// ProbeFeatures asks the running kernel.
func ProbeFeatures() Features {
	// A call that fails for the missing path, not ENOSYS, has the syscall.
	err := unix.MountSetattr(unix.AT_FDCWD, "/.ketch-probe-missing", unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	rro := !errors.Is(err, unix.ENOSYS)
	return Features{
		RecursiveReadOnlyMounts: rro,
		UserNamespaces:          rro && kernelAtLeast(5, 19) && userNamespacesAllowed(),
	}
}

func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	fields := strings.SplitN(unix.ByteSliceToString(u.Release[:]), ".", 3)
	if len(fields) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(fields[0])
	mi, _ := strconv.Atoi(strings.TrimLeftFunc(fields[1], func(r rune) bool { return r < '0' || r > '9' }))
	return ma > major || ma == major && mi >= minor
}

func userNamespacesAllowed() bool {
	b, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return err == nil && n > 0
}
