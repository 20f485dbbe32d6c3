package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// mountOf returns the host mount a path is on. A variable so that tests can
// describe propagation the test machine's mounts do not have.
var mountOf = hostMountOf

// bindFlags are the options a CRI mount may add (its mount_options): the
// ones the CRI names. Anything else is refused rather than passed to the
// kernel unread.
var bindFlags = []string{"nosuid", "nodev", "noexec"}

// mounts returns the container's mounts and the rootfs propagation its
// binds need. As in containerd, the kernel file systems come first, then
// the binds sorted so that a parent is mounted before what lies under it.
// A bind replaces a default mount at the same place; a bind of /dev
// replaces every default under /dev as well.
//
// The image's VOLUMEs get nothing. containerd gives each an anonymous
// directory in the container's state (unless ignore_image_defined_volumes);
// ketch has no such directory yet, and the image's own content at that
// path stays visible instead, which is what Kubernetes users get on
// runtimes that ignore VOLUME.
func mounts(in Input, cgroupNS, bindSys bool) ([]specs.Mount, string, error) {
	podFiles, err := podFileMounts(in)
	if err != nil {
		return nil, "", err
	}
	binds := append(slices.Clone(in.Config.GetMounts()), podFiles...)
	sort.SliceStable(binds, func(i, j int) bool {
		return depth(binds[i].GetContainerPath()) < depth(binds[j].GetContainerPath())
	})
	taken := map[string]bool{}
	for _, b := range binds {
		taken[filepath.Clean(b.GetContainerPath())] = true
	}
	var out []specs.Mount
	for _, m := range defaultMounts(securityContext(in).GetPrivileged(), cgroupNS, bindSys) {
		if taken[m.Destination] || taken["/dev"] && strings.HasPrefix(m.Destination, "/dev/") {
			continue
		}
		out = append(out, m)
	}
	var propagation string
	for _, b := range binds {
		m, p, err := bindMount(b)
		if err != nil {
			return nil, "", err
		}
		out = append(out, m)
		if p == "rshared" || propagation == "" {
			propagation = p
		}
	}
	return out, propagation, nil
}

func depth(p string) int {
	return strings.Count(filepath.Clean(p), "/")
}

// podFileMounts binds the pod's hosts, resolv.conf, hostname and /dev/shm,
// except where the config mounts something of its own. The files are
// read-only exactly when the rootfs is, as in containerd: a pod may edit
// its resolv.conf unless it asked for an immutable root. containerd skips a
// file its sandbox did not write; ketch's sandbox always writes them, so a
// named file that is missing means the pod's directory is gone, and is an
// error.
func podFileMounts(in Input) ([]*runtimeapi.Mount, error) {
	ro := securityContext(in).GetReadonlyRootfs()
	files := []*runtimeapi.Mount{
		{ContainerPath: "/etc/hostname", HostPath: in.HostnamePath, Readonly: ro},
		{ContainerPath: "/etc/hosts", HostPath: in.HostsPath, Readonly: ro},
		{ContainerPath: "/etc/resolv.conf", HostPath: in.ResolvConfPath, Readonly: ro},
		// /dev/shm must never be a way to run or create setuid programs or
		// devices, whatever the source was mounted with.
		{ContainerPath: "/dev/shm", HostPath: in.ShmPath, MountOptions: []string{"nosuid", "nodev", "noexec"}},
	}
	var out []*runtimeapi.Mount
	for _, f := range files {
		if f.HostPath == "" || slices.ContainsFunc(in.Config.GetMounts(), func(m *runtimeapi.Mount) bool {
			return filepath.Clean(m.GetContainerPath()) == f.ContainerPath
		}) {
			continue
		}
		if _, err := os.Stat(f.HostPath); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("pod file for %s: %s is missing: %w", f.ContainerPath, f.HostPath, errdefs.ErrNotFound)
		} else if err != nil {
			return nil, fmt.Errorf("pod file for %s: %w", f.ContainerPath, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// defaultMounts are containerd's, less /run (which CRI leaves to the
// image). /sys and the cgroup tree are read-only unless privileged: sysfs
// is mounted read-write all the same, and Spec makes it read-only with a
// bind remount, as sysfs has one superblock per network namespace, and a
// read-only first mount made every later one in the pod read-only, a
// privileged container's included, for as long as any lived. With
// bindSys, /sys is the node's, bound recursively: what containerd gives a
// user namespace on the node's network, where sysfs cannot be mounted.
func defaultMounts(privileged, cgroupNS, bindSys bool) []specs.Mount {
	mode := "ro"
	if privileged {
		mode = "rw"
	}
	sys := specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "rw"}}
	if bindSys {
		bindMode := "rro" // read-only all the way down, submounts too
		if privileged {
			bindMode = "rw"
		}
		sys = specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", bindMode}}
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts",
			Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		sys,
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: cgroupOptions(mode, cgroupNS)},
	}
}

// cgroupOptions keeps nsdelegate and memory_recursiveprot when the
// container shares the host's cgroup namespace: it then mounts the host's
// one cgroup2 superblock, and mount options left out would be taken off
// the host's cgroup tree as well.
func cgroupOptions(mode string, cgroupNS bool) []string {
	opts := []string{"nosuid", "noexec", "nodev", "relatime", mode}
	if cgroupNS {
		return opts
	}
	host, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter("/sys/fs/cgroup"))
	if err != nil || len(host) == 0 {
		return opts
	}
	for o := range strings.SplitSeq(host[len(host)-1].VFSOptions, ",") {
		if o == "nsdelegate" || o == "memory_recursiveprot" {
			opts = append(opts, o)
		}
	}
	return opts
}

// bindMount turns a CRI mount into a bind mount and the rootfs propagation
// it needs ("" for none).
func bindMount(m *runtimeapi.Mount) (specs.Mount, string, error) {
	dst := m.GetContainerPath()
	if !filepath.IsAbs(dst) {
		return specs.Mount{}, "", fmt.Errorf("mount %q: container_path is not absolute: %w", dst, errdefs.ErrInvalidArgument)
	}
	src, err := hostSource(m)
	if err != nil {
		return specs.Mount{}, "", fmt.Errorf("mount %s: %w", dst, err)
	}
	opts, propagation, err := bindOptions(m, src)
	if err != nil {
		return specs.Mount{}, "", fmt.Errorf("mount %s: %w", dst, err)
	}
	if m.GetImage().GetImage() != "" {
		// An image volume (its snapshot mounted by cri at host_path) is
		// read-only and, like any image content, runs no setuid binary
		// or device node of its own.
		opts = append(slices.DeleteFunc(opts, func(o string) bool { return o == "rw" }), "ro", "nosuid", "nodev")
	}
	// Clean: mounts are ordered and matched by their destinations.
	return specs.Mount{Destination: filepath.Clean(dst), Type: "bind", Source: src, Options: opts}, propagation, nil
}

// hostSource is the mount's host path with symlinks resolved. A missing
// path is created as a directory: kubelet leaves creating a hostPath
// volume's directory to the runtime, and containerd does so.
func hostSource(m *runtimeapi.Mount) (string, error) {
	src := m.GetHostPath()
	switch {
	case src == "" && m.GetImage().GetImage() != "":
		// cri mounts an image volume and names it in host_path first.
		return "", fmt.Errorf("image volume %s is not mounted: %w", m.GetImage().GetImage(), errdefs.ErrNotImplemented)
	case !filepath.IsAbs(src):
		return "", fmt.Errorf("host_path %q is not absolute: %w", src, errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(src, 0o755); err != nil {
			return "", fmt.Errorf("create host_path: %w", err)
		}
	} else if err != nil {
		return "", fmt.Errorf("host_path: %w", err)
	}
	resolved, err := filepath.EvalSymlinks(src)
	if err != nil {
		return "", fmt.Errorf("host_path: %w", err)
	}
	return resolved, nil
}

func bindOptions(m *runtimeapi.Mount, src string) ([]string, string, error) {
	opts := []string{"rbind"}
	var propagation string
	switch m.GetPropagation() {
	case runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
		opts = append(opts, "rprivate")
	case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
		if err := checkPropagation(src, "shared:", "master:"); err != nil {
			return nil, "", err
		}
		opts, propagation = append(opts, "rslave"), "rslave"
	case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
		if err := checkPropagation(src, "shared:"); err != nil {
			return nil, "", err
		}
		opts, propagation = append(opts, "rshared"), "rshared"
	default:
		return nil, "", fmt.Errorf("propagation %d: %w", m.GetPropagation(), errdefs.ErrInvalidArgument)
	}
	switch {
	case m.GetRecursiveReadOnly() && !m.GetReadonly():
		return nil, "", fmt.Errorf("recursive_read_only needs readonly: %w", errdefs.ErrInvalidArgument)
	case m.GetRecursiveReadOnly() && propagation != "":
		// A mount that receives propagation would get new, writable
		// submounts after the read-only flag was set on the tree.
		return nil, "", fmt.Errorf("recursive_read_only needs private propagation: %w", errdefs.ErrInvalidArgument)
	case m.GetRecursiveReadOnly():
		// runc makes the whole tree read-only with mount_setattr(2).
		opts = append(opts, "rro")
	case m.GetReadonly():
		opts = append(opts, "ro")
	default:
		opts = append(opts, "rw")
	}
	for _, o := range m.GetMountOptions() {
		if !slices.Contains(bindFlags, o) {
			return nil, "", fmt.Errorf("mount option %q: want one of %v: %w", o, bindFlags, errdefs.ErrInvalidArgument)
		}
		opts = append(opts, o)
	}
	return opts, propagation, nil
}

// checkPropagation makes sure the host mount under src propagates as asked:
// without a shared (or slave) source, a rslave or rshared bind is silently
// no different from a private one, and the pod would never see the mounts
// it waits for.
func checkPropagation(src string, accepted ...string) error {
	info, err := mountOf(src)
	if err != nil {
		return fmt.Errorf("find the host mount of %s: %w", src, err)
	}
	for _, o := range strings.Fields(info.Optional) {
		for _, a := range accepted {
			if strings.HasPrefix(o, a) {
				return nil
			}
		}
	}
	return fmt.Errorf("host path %s is on mount %s, which propagates as %q, not %v: %w",
		src, info.Mountpoint, info.Optional, accepted, errdefs.ErrFailedPrecondition)
}

// hostMountOf returns the mount a path is on: the deepest mount point above
// it, the later one when two are stacked on the same point.
func hostMountOf(path string) (*mountinfo.Info, error) {
	ms, err := mountinfo.GetMounts(mountinfo.ParentsFilter(path))
	if err != nil {
		return nil, err
	}
	var best *mountinfo.Info
	for _, m := range ms {
		if best == nil || len(m.Mountpoint) >= len(best.Mountpoint) {
			best = m
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no mount holds %s: %w", path, errdefs.ErrNotFound)
	}
	return best, nil
}
