package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/systemd"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CgroupDriver is who makes the cgroups of pods and containers, as
// kubelet's --cgroup-driver names it; "" is cgroupfs.
type CgroupDriver string

// The cgroup drivers, and where each puts a container whose pod names no
// parent: never the root of a hierarchy, which ketch must not litter.
const (
	CgroupDriverCgroupfs CgroupDriver = "cgroupfs"
	CgroupDriverSystemd  CgroupDriver = "systemd"
	DefaultCgroupParent               = "/ketch"
	DefaultSystemdSlice               = "system.slice"
)

// devDirsSkipped are the directories under /dev that hold no device nodes
// a privileged container should get copies of: the container has its own
// pts, shm and mqueue, fd is a symlink farm, and the rest belong to lxd
// and udev (runc#2093).
var devDirsSkipped = []string{"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}

var errNotDevice = errors.New("not a device node")

func linuxSection(in Input) (*specs.Linux, error) {
	sc := securityContext(in)
	ns, err := namespaces(in)
	if err != nil {
		return nil, err
	}
	uids, gids, err := UserNamespace(in.Config, in.Pod)
	if err != nil {
		return nil, err
	}
	if uids != nil {
		// First, as runc joins it first: it owns the pod's namespaces the
		// container joins and those it makes.
		user, err := sandboxNamespace(in, specs.UserNamespace, "user")
		if err != nil {
			return nil, err
		}
		ns = append([]specs.LinuxNamespace{user}, ns...)
	}
	devs, rules, err := devices(in.Config, sc.GetPrivileged())
	if err != nil {
		return nil, err
	}
	res, err := resources(in.Config.GetLinux().GetResources(), rules)
	if err != nil {
		return nil, err
	}
	cg, err := CgroupsPath(in.CgroupDriver, in.CgroupParent, in.ID)
	if err != nil {
		return nil, err
	}
	// With the path, the mappings too, as containerd and CRI-O give them:
	// runc then refuses to join a namespace whose mappings are not these
	// (the pod's PID 1 gone and its PID taken by another process).
	l := &specs.Linux{Namespaces: ns, Devices: devs, Resources: res, CgroupsPath: cg, UIDMappings: uids, GIDMappings: gids}
	// containerd empties its default masked and read-only paths and uses
	// only what the config gives: proto3 cannot tell an empty list from a
	// missing one, and kubelet sends the full list for procMount Default
	// and an empty one for Unmasked, which defaults would silently undo.
	if !sc.GetPrivileged() {
		l.MaskedPaths = slices.Clone(sc.GetMaskedPaths())
		l.ReadonlyPaths = slices.Clone(sc.GetReadonlyPaths())
		// Empty lists mean Unmasked only where kubelet allows that: in a
		// user namespace of the pod's own. Elsewhere (crictl, a client that
		// sends none) /proc/sys and /proc/sysrq-trigger would be the node's
		// to write.
		if len(l.MaskedPaths) == 0 && len(l.ReadonlyPaths) == 0 && uids == nil {
			l.MaskedPaths, l.ReadonlyPaths = slices.Clone(DefaultMaskedPaths), slices.Clone(DefaultReadonlyPaths)
		}
	}
	return l, nil
}

// DefaultMaskedPaths and DefaultReadonlyPaths are the lists kubelet sends
// for procMount Default.
var (
	DefaultMaskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
	DefaultReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// namespaces follows the container's namespace options. The network
// namespace is the pod's pin rather than /proc/<pid>/ns/net (containerd's
// choice), which a reused PID could make someone else's.
func namespaces(in Input) ([]specs.LinuxNamespace, error) {
	opts := securityContext(in).GetNamespaceOptions()
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	net, err := networkNamespaces(in)
	if err != nil {
		return nil, err
	}
	ns = append(ns, net...)
	ipc, err := modeNamespace(in, specs.IPCNamespace, opts.GetIpc())
	if err != nil {
		return nil, err
	}
	pid, err := modeNamespace(in, specs.PIDNamespace, opts.GetPid())
	if err != nil {
		return nil, err
	}
	ns = append(append(ns, ipc...), pid...)
	// A cgroup namespace hides the host's cgroup tree; containerd gives one
	// only on cgroup v2 (v1 tools expect the host's paths) and never to a
	// privileged container, which may manage the host's cgroups.
	if cgroups.IsCgroup2UnifiedMode() && !securityContext(in).GetPrivileged() {
		ns = append(ns, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	return ns, nil
}

// networkNamespaces joins the pod's network and UTS namespaces, or none for
// a pod on the node's network: such a pod has the node's hostname too, as
// kubelet expects. Either config saying NODE is enough, since crictl's
// container configs often carry no namespace options at all.
func networkNamespaces(in Input) ([]specs.LinuxNamespace, error) {
	mode := securityContext(in).GetNamespaceOptions().GetNetwork()
	podMode := in.Pod.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork()
	switch {
	case mode == runtimeapi.NamespaceMode_NODE || podMode == runtimeapi.NamespaceMode_NODE:
		return nil, nil
	case mode != runtimeapi.NamespaceMode_POD:
		return nil, fmt.Errorf("network namespace mode %s: %w", mode, errdefs.ErrInvalidArgument)
	case in.NetNSPath == "":
		return nil, fmt.Errorf("network namespace mode POD without the pod's netns path: %w", errdefs.ErrInvalidArgument)
	}
	uts, err := sandboxNamespace(in, specs.UTSNamespace, "uts")
	if err != nil {
		return nil, err
	}
	return []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: in.NetNSPath}, uts}, nil
}

// modeNamespace maps a CRI mode to the IPC or PID namespace: POD joins the
// sandbox's, CONTAINER gets a new one, NODE keeps the host's, and TARGET
// (PID only) joins the target container's.
func modeNamespace(in Input, t specs.LinuxNamespaceType, mode runtimeapi.NamespaceMode) ([]specs.LinuxNamespace, error) {
	name := map[specs.LinuxNamespaceType]string{specs.IPCNamespace: "ipc", specs.PIDNamespace: "pid"}[t]
	switch {
	case mode == runtimeapi.NamespaceMode_POD:
		ns, err := sandboxNamespace(in, t, name)
		return []specs.LinuxNamespace{ns}, err
	case mode == runtimeapi.NamespaceMode_CONTAINER:
		return []specs.LinuxNamespace{{Type: t}}, nil
	case mode == runtimeapi.NamespaceMode_NODE:
		return nil, nil
	case mode == runtimeapi.NamespaceMode_TARGET && t == specs.PIDNamespace:
		if in.TargetPID <= 0 {
			return nil, fmt.Errorf("pid namespace mode TARGET without the target's PID: %w", errdefs.ErrInvalidArgument)
		}
		return []specs.LinuxNamespace{{Type: t, Path: fmt.Sprintf("/proc/%d/ns/pid", in.TargetPID)}}, nil
	}
	return nil, fmt.Errorf("%s namespace mode %s: %w", name, mode, errdefs.ErrInvalidArgument)
}

func sandboxNamespace(in Input, t specs.LinuxNamespaceType, name string) (specs.LinuxNamespace, error) {
	if pin := in.SandboxNS[name]; pin != "" {
		return specs.LinuxNamespace{Type: t, Path: pin}, nil
	}
	return specs.LinuxNamespace{}, fmt.Errorf("the pod has no %s namespace of its own to join: %w", name, errdefs.ErrInvalidArgument)
}

func hasNamespace(l *specs.Linux, t specs.LinuxNamespaceType) bool {
	return slices.ContainsFunc(l.Namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == t })
}

// devices returns the config's devices and the cgroup rules that allow
// them, after a rule that denies everything. runc's specconv adds the
// devices every container needs (null, zero, full, random, urandom, tty,
// ptmx, pts, tun) by itself, so they are not repeated here. A privileged
// container gets every host device and access to all, as in containerd.
func devices(cfg *runtimeapi.ContainerConfig, privileged bool) ([]specs.LinuxDevice, []specs.LinuxDeviceCgroup, error) {
	rules := []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
	var devs []specs.LinuxDevice
	for _, d := range cfg.GetDevices() {
		perms := d.GetPermissions()
		if perms == "" || strings.Trim(perms, "rwm") != "" {
			return nil, nil, fmt.Errorf("device %s: permissions %q: want some of \"rwm\": %w", d.GetHostPath(), perms, errdefs.ErrInvalidArgument)
		}
		found, err := configDevices(d)
		if err != nil {
			return nil, nil, fmt.Errorf("device %s: %w", d.GetHostPath(), err)
		}
		for _, dev := range found {
			major, minor := dev.Major, dev.Minor
			devs = append(devs, dev)
			rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: dev.Type, Major: &major, Minor: &minor, Access: perms})
		}
	}
	if !privileged {
		return devs, rules, nil
	}
	host, err := hostDevices("/dev", "")
	if err != nil {
		return nil, nil, fmt.Errorf("host devices: %w", err)
	}
	for _, dev := range host {
		if !slices.ContainsFunc(devs, func(d specs.LinuxDevice) bool { return d.Path == dev.Path }) {
			devs = append(devs, dev)
		}
	}
	return devs, append(rules, specs.LinuxDeviceCgroup{Allow: true, Access: "rwm"}), nil
}

func configDevices(d *runtimeapi.Device) ([]specs.LinuxDevice, error) {
	if !filepath.IsAbs(d.GetHostPath()) {
		return nil, fmt.Errorf("host_path is not absolute: %w", errdefs.ErrInvalidArgument)
	}
	if cp := d.GetContainerPath(); cp != "" && !filepath.IsAbs(cp) {
		return nil, fmt.Errorf("container_path %q is not absolute: %w", cp, errdefs.ErrInvalidArgument)
	}
	host, err := filepath.EvalSymlinks(d.GetHostPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no such device on the node: %w", errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	found, err := hostDevices(host, d.GetContainerPath())
	if errors.Is(err, errNotDevice) {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return found, err
}

// hostDevices returns the device at p, or the devices under directory p,
// each at containerPath (or its host path when containerPath is "").
func hostDevices(p, containerPath string) ([]specs.LinuxDevice, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if containerPath == "" {
		containerPath = p
	}
	if !fi.IsDir() {
		dev, err := deviceAt(p)
		if err != nil {
			return nil, err
		}
		dev.Path = containerPath
		return []specs.LinuxDevice{dev}, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	var out []specs.LinuxDevice
	for _, e := range entries {
		hp, cp := filepath.Join(p, e.Name()), filepath.Join(containerPath, e.Name())
		if e.IsDir() {
			if slices.Contains(devDirsSkipped, e.Name()) {
				continue
			}
			sub, err := hostDevices(hp, cp)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
			continue
		}
		// The container has a console of its own when it has a terminal.
		if e.Name() == "console" {
			continue
		}
		dev, err := deviceAt(hp)
		if errors.Is(err, errNotDevice) || errors.Is(err, fs.ErrNotExist) || err == nil && dev.Type == "p" {
			continue
		}
		if err != nil {
			return nil, err
		}
		dev.Path = cp
		out = append(out, dev)
	}
	return out, nil
}

// deviceAt describes the device node at p; a symlink is not one.
func deviceAt(p string) (specs.LinuxDevice, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return specs.LinuxDevice{}, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	var t string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		t = "b"
	case unix.S_IFCHR:
		t = "c"
	case unix.S_IFIFO:
		t = "p"
	default:
		return specs.LinuxDevice{}, fmt.Errorf("%s: %w", p, errNotDevice)
	}
	mode := fs.FileMode(st.Mode &^ unix.S_IFMT)
	uid, gid := st.Uid, st.Gid
	return specs.LinuxDevice{
		Path: p, Type: t,
		Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)),
		FileMode: &mode, UID: &uid, GID: &gid,
	}, nil
}

func resources(r *runtimeapi.LinuxContainerResources, rules []specs.LinuxDeviceCgroup) (*specs.LinuxResources, error) {
	out := &specs.LinuxResources{Devices: rules}
	if r == nil {
		return out, nil
	}
	cpu, err := cpuResources(r)
	if err != nil {
		return nil, err
	}
	out.CPU = cpu
	out.Memory = memoryResources(r)
	// kubelet sends a limit for every page size the node has; without the
	// hugetlb controller containerd (tolerate_missing_hugetlb_controller,
	// on by default) drops them rather than fail every container.
	if hugetlbAvailable() {
		for _, h := range r.GetHugepageLimits() {
			out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
		}
	}
	if len(r.GetUnified()) > 0 {
		out.Unified = maps.Clone(r.GetUnified())
	}
	return out, nil
}

func cpuResources(r *runtimeapi.LinuxContainerResources) (*specs.LinuxCPU, error) {
	if r.GetCpuShares() < 0 || r.GetCpuPeriod() < 0 {
		return nil, fmt.Errorf("cpu_shares %d, cpu_period %d: negative: %w", r.GetCpuShares(), r.GetCpuPeriod(), errdefs.ErrInvalidArgument)
	}
	cpu := &specs.LinuxCPU{Cpus: r.GetCpusetCpus(), Mems: r.GetCpusetMems()}
	if s := uint64(r.GetCpuShares()); s != 0 {
		cpu.Shares = &s
	}
	if q := r.GetCpuQuota(); q != 0 {
		cpu.Quota = &q
	}
	if p := uint64(r.GetCpuPeriod()); p != 0 {
		cpu.Period = &p
	}
	if *cpu == (specs.LinuxCPU{}) {
		return nil, nil
	}
	return cpu, nil
}

// memoryResources sets swap equal to the limit when the config names no
// swap limit, as containerd does, so that a container cannot swap past
// its memory limit by default. Without the swap controller a swap limit
// cannot be set at all and is left out.
func memoryResources(r *runtimeapi.LinuxContainerResources) *specs.LinuxMemory {
	limit, swap := r.GetMemoryLimitInBytes(), r.GetMemorySwapLimitInBytes()
	if limit == 0 && swap == 0 {
		return nil
	}
	m := &specs.LinuxMemory{}
	if limit != 0 {
		m.Limit = &limit
		if swap == 0 {
			swap = limit
		}
	}
	if swap != 0 && swapAvailable() {
		m.Swap = &swap
	}
	return m
}

var swapAvailable = sync.OnceValue(func() bool {
	p := "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"
	if cgroups.IsCgroup2UnifiedMode() {
		// The root cgroup has no memory.swap.max, so look in our own.
		own, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
		if err != nil {
			return false
		}
		p = filepath.Join("/sys/fs/cgroup", own[""], "memory.swap.max")
	}
	_, err := os.Stat(p)
	return err == nil
})

// hugetlbAvailable asks whether the controller is mounted, not whether the
// kernel has it: /proc/cgroups lists hugetlb on hosts that never mount it
// (node-facts.md), and a limit for it then fails every container start.
var hugetlbAvailable = sync.OnceValue(func() bool {
	if cgroups.IsCgroup2UnifiedMode() {
		b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		return err == nil && slices.Contains(strings.Fields(string(b)), "hugetlb")
	}
	_, err := cgroups.FindCgroupMountpoint("", "hugetlb")
	return err == nil
})

// CgroupsPath is the spec's cgroupsPath of the cgroup named name under
// parent, in the form runc's specconv parses for the driver: an absolute
// path for cgroupfs (a relative one would be taken from the shim's own
// cgroup), "slice:prefix:name" for systemd. A pod's and its containers'
// cgroups are named the same way, each by its ID.
func CgroupsPath(driver CgroupDriver, parent, name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/:") || name == "." || name == ".." {
		return "", fmt.Errorf("cgroup name %q: %w", name, errdefs.ErrInvalidArgument)
	}
	switch driver {
	case "", CgroupDriverCgroupfs:
		if parent == "" {
			parent = DefaultCgroupParent
		}
		if slices.Contains(strings.Split(parent, "/"), "..") {
			return "", fmt.Errorf("cgroup parent %q: %w", parent, errdefs.ErrInvalidArgument)
		}
		return path.Join("/", parent, name), nil
	case CgroupDriverSystemd:
		slice := DefaultSystemdSlice
		if parent != "" {
			// kubelet may name a slice by its path in the tree, as
			// containerd accepts; systemd wants only its name.
			slice = path.Base(parent)
		}
		if !strings.HasSuffix(slice, ".slice") {
			return "", fmt.Errorf("cgroup parent %q is not a systemd slice: %w", parent, errdefs.ErrInvalidArgument)
		}
		return slice + ":ketch:" + name, nil
	}
	return "", fmt.Errorf("cgroup driver %q: want %q or %q: %w", driver, CgroupDriverCgroupfs, CgroupDriverSystemd, errdefs.ErrInvalidArgument)
}

// CgroupPaths is where libcontainer makes the cgroup of the container whose
// spec's cgroupsPath is p, by controller as its managers take paths (""
// for cgroup v2's one directory): ketchd reads a container's usage there
// without a round trip to its shim. Where libcontainer would place it
// relative to systemd's own cgroups (cgroup v1 with the systemd driver) it
// is ErrNotImplemented.
func CgroupPaths(p string) (map[string]string, error) {
	rel := p
	if !path.IsAbs(p) {
		parts := strings.Split(p, ":")
		if len(parts) != 3 || parts[2] == "" {
			return nil, fmt.Errorf("cgroups path %q: %w", p, errdefs.ErrInvalidArgument)
		}
		slice, err := systemd.ExpandSlice(parts[0])
		if err != nil {
			return nil, fmt.Errorf("cgroups path %q: %w: %w", p, errdefs.ErrInvalidArgument, err)
		}
		if !cgroups.IsCgroup2UnifiedMode() {
			return nil, fmt.Errorf("cgroups path %q on cgroup v1: %w", p, errdefs.ErrNotImplemented)
		}
		rel = path.Join(slice, parts[1]+"-"+parts[2]+".scope")
	}
	if cgroups.IsCgroup2UnifiedMode() {
		return map[string]string{"": path.Join(cgroupRoot, rel)}, nil
	}
	mounts, err := v1Mounts()
	if err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for _, m := range mounts {
		for _, sub := range m.Subsystems {
			// As libcontainer's fs manager does for an absolute path.
			paths[sub] = path.Join(cgroupRoot, path.Base(m.Mountpoint), rel)
		}
	}
	return paths, nil
}

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// v1Mounts are the cgroup v1 hierarchies, read once: the mount table is
// long on a node of many pods.
var v1Mounts = sync.OnceValues(func() ([]cgroups.Mount, error) { return cgroups.GetCgroupMounts(false) })

// Resources is the runtime-spec form of a container's CRI resources, for
// UpdateContainerResources: what Spec would set, device rules aside.
func Resources(r *runtimeapi.LinuxContainerResources) (*specs.LinuxResources, error) {
	return resources(r, nil)
}
