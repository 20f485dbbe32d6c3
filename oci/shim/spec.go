package shim

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const (
	defaultShmSize = 64 << 20
	// ketch-init finds nothing on PATH in its rootfs; PATH is set only so
	// that programs it might run never fall back to a compiled-in default.
	sandboxPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// The sandbox mounts no /sys: sysfs has one superblock per network
// namespace, and a read-only first mount of it would make every container's
// /sys in the pod read-only too, a privileged one's included.
//
// The paths runc's and containerd's default specs hide or make read-only:
// the sandbox runs no user code, but it is cheap defence in depth and keeps
// the sandbox consistent with the pod's containers.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
		"/proc/timer_stats",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// sandboxSpec is the runtime-spec of a pod's PID 1. The shim turns specs into
// libcontainer configs with runc's own specconv, so the sandbox and the
// containers oci/ will describe as specs take the same path.
func sandboxSpec(c *SandboxConfig, oomScoreAdj int) *specs.Spec {
	args := c.Args
	if len(args) == 0 {
		args = []string{"/ketch-init"}
	}
	s := &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: c.Rootfs, Readonly: true},
		Hostname: c.Hostname,
		Process: &specs.Process{
			Args: args,
			Env:  []string{sandboxPath},
			Cwd:  "/",
			// An empty set, never nil: libcontainer gives a nil set the
			// host root's full capabilities.
			Capabilities:    &specs.LinuxCapabilities{},
			NoNewPrivileges: true,
			OOMScoreAdj:     &oomScoreAdj,
		},
		Mounts: sandboxMounts(c),
		Linux: &specs.Linux{
			Namespaces:  sandboxNamespaces(c),
			CgroupsPath: cgroupsPath(c.Cgroup),
			Sysctl:      c.Sysctls,
			Resources: &specs.LinuxResources{
				// Deny every device but the defaults specconv adds.
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
	if c.UserNSPath != "" {
		// Both the path and the mappings, as containerd and CRI-O give
		// them: runc then refuses a namespace whose mappings are not these.
		s.Linux.UIDMappings, s.Linux.GIDMappings = c.UIDMappings, c.GIDMappings
	}
	return s
}

func sandboxNamespaces(c *SandboxConfig) []specs.LinuxNamespace {
	var ns []specs.LinuxNamespace
	if c.UserNSPath != "" {
		// runc joins it first: the namespaces below are then made in it,
		// and it owns them.
		ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace, Path: c.UserNSPath})
	}
	ns = append(ns, specs.LinuxNamespace{Type: specs.MountNamespace})
	if !c.HostPID {
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	if !c.HostIPC {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace})
	}
	if !c.HostUTS {
		ns = append(ns, specs.LinuxNamespace{Type: specs.UTSNamespace})
	}
	if c.NetNSPath != "" {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: c.NetNSPath})
	}
	return ns
}

func sandboxMounts(c *SandboxConfig) []specs.Mount {
	m := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
	}
	if c.ShmPath != "" {
		m = append(m, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: c.ShmPath, Options: []string{"rbind", "nosuid", "noexec", "nodev"}})
	} else {
		size := c.ShmSize
		if size <= 0 {
			size = defaultShmSize
		}
		m = append(m, specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=" + strconv.FormatInt(size, 10)}})
	}
	for _, f := range []struct{ src, dst string }{
		{c.HostsPath, "/etc/hosts"}, {c.ResolvConfPath, "/etc/resolv.conf"}, {c.HostnamePath, "/etc/hostname"},
	} {
		if f.src != "" {
			m = append(m, specs.Mount{Destination: f.dst, Type: "bind", Source: f.src, Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
		}
	}
	return m
}

// cgroupsPath is the spec's cgroupsPath in the form the driver's specconv
// parser expects: an absolute path for cgroupfs (a relative one would be
// taken from the shim's own cgroup), "slice:prefix:name" for systemd.
func cgroupsPath(c Cgroup) string {
	if c.Driver == DriverSystemd {
		parent := c.Parent
		if parent == "" {
			parent = "system.slice"
		}
		return parent + ":ketch:" + c.Name
	}
	return path.Join("/", c.Parent, c.Name)
}

// clampOOMScoreAdj returns the value closest to want that this process may
// give its children. Without CAP_SYS_RESOURCE the kernel refuses to go
// below the shim's own value (EACCES), and libcontainer then fails with an
// unhelpful "can't get final child's PID from pipe: EOF" (node-facts.md).
func clampOOMScoreAdj(want int) (int, error) {
	lowest := -1000
	if !haveCapability(unix.CAP_SYS_RESOURCE) {
		data, err := os.ReadFile("/proc/self/oom_score_adj")
		if err != nil {
			return 0, fmt.Errorf("read own oom_score_adj: %w", err)
		}
		if lowest, err = strconv.Atoi(string(bytes.TrimSpace(data))); err != nil {
			return 0, fmt.Errorf("read own oom_score_adj: %w", err)
		}
	}
	return min(max(want, lowest), 1000), nil
}

func haveCapability(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}

// ValidHostname follows RFC 1123, as kubelet does for pod hostnames; the
// kernel takes up to 64 bytes of anything.
func ValidHostname(h string) bool {
	if h == "" || len(h) > 63 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
