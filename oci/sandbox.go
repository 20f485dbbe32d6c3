package oci

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// SandboxInput is everything the runtime spec of a pod's PID 1 (ketch-init
// in pause mode) is made from.
type SandboxInput struct {
	ID     string // the pod's, which names its cgroup too
	Rootfs string // the read-only sandbox rootfs holding /ketch-init
	// Hostname is the pod's; "" with HostUTS.
	Hostname string
	// NetNSPath is the pod's pinned network namespace; "" for the node's.
	NetNSPath                 string
	HostPID, HostIPC, HostUTS bool
	CgroupDriver              CgroupDriver
	// CgroupParent is the pod's cgroup parent; "" as for a container.
	CgroupParent string
	OOMScoreAdj  int
	Sysctls      map[string]string
	// ShmPath is the pod's /dev/shm directory; "" gives it a private one.
	ShmPath string
	// The pod's files, bind-mounted read-only; "" skips one.
	HostsPath, ResolvConfPath, HostnamePath string
	// UserNSPath is a user namespace (a pin ketchd made) to join, and the
	// mappings it must have; "": the host's.
	UserNSPath               string
	UIDMappings, GIDMappings []specs.LinuxIDMapping
}

// SandboxInit is the pod's PID 1 in the sandbox rootfs.
const SandboxInit = "/ketch-init"

// ketch-init finds nothing on PATH in its rootfs; PATH is set only so that
// programs it might run never fall back to a compiled-in default.
const sandboxPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The sandbox mounts no /sys: sysfs has one superblock per network
// namespace, and a read-only first mount of it would make every container's
// /sys in the pod read-only too, a privileged one's included.
//
// The paths runc's and containerd's default specs hide or make read-only:
// the sandbox runs no user code, but it is cheap defence in depth and keeps
// the sandbox consistent with the pod's containers.
var (
	sandboxMaskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
		"/proc/timer_stats",
	}
	sandboxReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// SandboxSpec is the runtime spec of a pod's PID 1, built as a container's
// is, so that the shim takes both the same way. Input that cannot work is
// InvalidArgument; what only the node can tell (does the rootfs exist?)
// the shim checks.
func SandboxSpec(in SandboxInput) (*specs.Spec, error) {
	switch {
	case in.HostUTS && in.Hostname != "":
		return nil, fmt.Errorf("hostname %q with the host's UTS namespace: %w", in.Hostname, errdefs.ErrInvalidArgument)
	case !in.HostUTS && !ValidHostname(in.Hostname):
		return nil, fmt.Errorf("hostname %q is not an RFC 1123 name: %w", in.Hostname, errdefs.ErrInvalidArgument)
	case in.UserNSPath == "" && (len(in.UIDMappings) > 0 || len(in.GIDMappings) > 0):
		return nil, fmt.Errorf("uid and gid mappings without a user namespace: %w", errdefs.ErrInvalidArgument)
	case in.UserNSPath != "" && (len(in.UIDMappings) == 0 || len(in.GIDMappings) == 0):
		return nil, fmt.Errorf("user namespace %s without its uid and gid mappings: %w", in.UserNSPath, errdefs.ErrInvalidArgument)
	case in.UserNSPath != "" && (in.HostPID || in.HostIPC):
		// The kernel lets a user namespace mount proc and mqueue only for
		// namespaces it owns.
		return nil, fmt.Errorf("a user namespace with the host's PID or IPC namespace: %w", errdefs.ErrInvalidArgument)
	}
	cg, err := CgroupsPath(in.CgroupDriver, in.CgroupParent, in.ID)
	if err != nil {
		return nil, err
	}
	oom := in.OOMScoreAdj
	s := &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: in.Rootfs, Readonly: true},
		Hostname: in.Hostname,
		Process: &specs.Process{
			Args: []string{SandboxInit},
			Env:  []string{sandboxPath},
			Cwd:  "/",
			// An empty set, never nil: libcontainer gives a nil set the
			// host root's full capabilities.
			Capabilities:    &specs.LinuxCapabilities{},
			NoNewPrivileges: true,
			OOMScoreAdj:     &oom,
		},
		Mounts: sandboxMounts(in),
		Linux: &specs.Linux{
			Namespaces:  sandboxNamespaces(in),
			CgroupsPath: cg,
			Sysctl:      in.Sysctls,
			Resources: &specs.LinuxResources{
				// Deny every device but the defaults specconv adds.
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			MaskedPaths:   sandboxMaskedPaths,
			ReadonlyPaths: sandboxReadonlyPaths,
		},
	}
	if in.UserNSPath != "" {
		// Both the path and the mappings, as containerd and CRI-O give
		// them: runc then refuses a namespace whose mappings are not these.
		s.Linux.UIDMappings, s.Linux.GIDMappings = in.UIDMappings, in.GIDMappings
	}
	return s, nil
}

func sandboxNamespaces(in SandboxInput) []specs.LinuxNamespace {
	var ns []specs.LinuxNamespace
	if in.UserNSPath != "" {
		// runc joins it first: the namespaces below are then made in it,
		// and it owns them.
		ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace, Path: in.UserNSPath})
	}
	ns = append(ns, specs.LinuxNamespace{Type: specs.MountNamespace})
	for _, n := range []struct {
		t    specs.LinuxNamespaceType
		host bool
	}{{specs.PIDNamespace, in.HostPID}, {specs.IPCNamespace, in.HostIPC}, {specs.UTSNamespace, in.HostUTS}} {
		if !n.host {
			ns = append(ns, specs.LinuxNamespace{Type: n.t})
		}
	}
	if in.NetNSPath != "" {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: in.NetNSPath})
	}
	return ns
}

func sandboxMounts(in SandboxInput) []specs.Mount {
	m := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
	}
	if in.ShmPath != "" {
		m = append(m, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: in.ShmPath, Options: []string{"rbind", "nosuid", "noexec", "nodev"}})
	} else {
		m = append(m, specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}})
	}
	for _, f := range []struct{ src, dst string }{
		{in.HostsPath, "/etc/hosts"}, {in.ResolvConfPath, "/etc/resolv.conf"}, {in.HostnamePath, "/etc/hostname"},
	} {
		if f.src != "" {
			m = append(m, specs.Mount{Destination: f.dst, Type: "bind", Source: f.src, Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
		}
	}
	return m
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
