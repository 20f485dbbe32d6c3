// Package preflight is `ketchd check`: whether this node can run ketch,
// and what it lacks, told before kubelet is pointed at it. Each check
// reads the node through Host, so that tests can give every verdict.
package preflight

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Verdict is a check's outcome: fail means ketch cannot run pods here.
type Verdict string

const (
	OK   Verdict = "ok"
	Warn Verdict = "warn"
	Fail Verdict = "fail"
)

// Result is one check's verdict, with what was found and, unless ok, what
// to do about it.
type Result struct {
	Check   string
	Verdict Verdict
	Detail  string
}

// Host is what the checks read of the node.
type Host interface {
	ReadFile(name string) ([]byte, error)
	Stat(name string) (fs.FileInfo, error)
	ReadDir(name string) ([]fs.DirEntry, error)
	// EffectiveCaps is this process's effective capability set.
	EffectiveCaps() (uint64, error)
	// FreeBytes is what is free on the file system of path, or of its
	// nearest existing ancestor.
	FreeBytes(path string) (uint64, error)
	KernelRelease() string
	// SocketServed tells whether something accepts connections on path.
	SocketServed(path string) bool
}

// Config is what of ketchd's configuration the checks look at.
type Config struct {
	CgroupDriver        string // "cgroupfs" or "systemd"
	CNIConfDir          string
	CNIBinDirs          []string
	Socket, Root, State string
	// RegistryConfig parses the registry configuration.
	RegistryConfig func() error
}

// Run runs every check.
func Run(h Host, c Config) []Result {
	return []Result{
		cgroupVersion(h, c), controllers(h), systemd(h), capSysResource(h), userNamespaces(h),
		overlay(h), seccomp(h), lsm(h), cniConfig(h, c), registry(c), socket(h, c),
		disk(h, "root", c.Root), disk(h, "state", c.State),
	}
}

// Failed tells whether a result forbids running ketch here.
func Failed(rs []Result) bool {
	return slices.ContainsFunc(rs, func(r Result) bool { return r.Verdict == Fail })
}

// Print writes one line per check.
func Print(w io.Writer, rs []Result) {
	for _, r := range rs {
		fmt.Fprintf(w, "%-4s  %-18s %s\n", r.Verdict, r.Check, r.Detail)
	}
}

func exists(h Host, name string) bool {
	_, err := h.Stat(name)
	return err == nil
}

const cgroupRoot = "/sys/fs/cgroup"

// cgroupV2 tells whether the node runs the unified hierarchy alone.
func cgroupV2(h Host) bool { return exists(h, cgroupRoot+"/cgroup.controllers") }

func cgroupVersion(h Host, c Config) Result {
	r := Result{Check: "cgroup version", Verdict: OK, Detail: "cgroup v2 (unified)"}
	if !cgroupV2(h) {
		r.Verdict = Warn
		r.Detail = "cgroup v1: pods run, but kubelet 1.35 and later start only with failCgroupV1: false, and pressure (PSI) stats and metrics need cgroup v2; boot with systemd.unified_cgroup_hierarchy=1 to move"
	}
	if c.CgroupDriver == "systemd" && !exists(h, "/run/systemd/system") {
		r.Verdict = Fail
		r.Detail = `cgroup_driver = "systemd", but systemd does not run here: set cgroup_driver = "cgroupfs" (and kubelet's cgroupDriver: cgroupfs)`
	}
	return r
}

func controllers(h Host) Result {
	r := Result{Check: "cgroup controllers", Verdict: OK}
	have := map[string]bool{}
	need := []string{"cpu", "memory", "pids"}
	if cgroupV2(h) {
		b, _ := h.ReadFile(cgroupRoot + "/cgroup.controllers")
		for _, c := range strings.Fields(string(b)) {
			have[c] = true
		}
	} else {
		need = append(need, "cpuacct", "devices", "freezer")
		for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "devices", "freezer", "blkio", "hugetlb"} {
			have[c] = exists(h, filepath.Join(cgroupRoot, c))
		}
		have["io"] = have["blkio"]
	}
	var missing []string
	for _, c := range need {
		if !have[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		r.Verdict = Fail
		r.Detail = "not mounted: " + strings.Join(missing, ", ") + "; containers cannot be confined without them: enable them in the kernel and mount them"
		return r
	}
	var notes []string
	if !have["hugetlb"] && hugetlbCompiledIn(h) {
		r.Verdict = Warn
		notes = append(notes, "hugetlb is compiled in but not mounted: the hugepage limits kubelet sends are dropped, so hugepages-* requests go unenforced; mount the hugetlb controller to enforce them")
	}
	if !have["io"] {
		r.Verdict = Warn
		notes = append(notes, "no blkio/io controller: block IO stats and metrics stay empty")
	}
	r.Detail = "cpu, memory, pids mounted"
	if len(notes) > 0 {
		r.Detail = strings.Join(notes, "; ")
	}
	return r
}

// hugetlbCompiledIn reads /proc/cgroups: the controllers the kernel has,
// mounted or not.
func hugetlbCompiledIn(h Host) bool {
	b, _ := h.ReadFile("/proc/cgroups")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "hugetlb" {
			return f[3] == "1"
		}
	}
	return false
}

func systemd(h Host) Result {
	if exists(h, "/run/systemd/system") {
		return Result{Check: "systemd", Verdict: OK, Detail: `systemd runs: cgroup_driver = "systemd" is possible`}
	}
	return Result{Check: "systemd", Verdict: Warn, Detail: `systemd does not run here: use cgroup_driver = "cgroupfs" and kubelet's cgroupDriver: cgroupfs; make run starts ketchd without a unit`}
}

const capSysResourceBit = 24

func capSysResource(h Host) Result {
	r := Result{Check: "CAP_SYS_RESOURCE", Verdict: OK, Detail: "held: pods get the oom_score_adj kubelet asks for"}
	caps, err := h.EffectiveCaps()
	if err != nil || caps&(1<<capSysResourceBit) == 0 {
		r.Verdict = Warn
		r.Detail = "not held (a container or a restricted service unit?): an oom_score_adj below ketchd's own is raised to it, so Guaranteed pods lose their OOM protection; run ketchd with CAP_SYS_RESOURCE"
	}
	return r
}

func userNamespaces(h Host) Result {
	r := Result{Check: "user namespaces", Verdict: OK}
	b, err := h.ReadFile("/proc/sys/user/max_user_namespaces")
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n == 0 {
		r.Verdict = Warn
		r.Detail = "off (user.max_user_namespaces is 0): pods with hostUsers: false fail; set the sysctl above 0"
		return r
	}
	if !kernelAtLeast(h.KernelRelease(), 5, 19) {
		r.Verdict = Warn
		r.Detail = fmt.Sprintf("on, but Linux %s lacks idmapped overlay mounts (5.19): pods with hostUsers: false fail", h.KernelRelease())
		return r
	}
	r.Detail = "on, with idmapped mounts: pods with hostUsers: false run"
	return r
}

// kernelAtLeast compares a release such as "6.18.0-1-amd64".
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(parts[0])
	mi, _ := strconv.Atoi(strings.TrimLeftFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return ma > major || ma == major && mi >= minor
}

func overlay(h Host) Result {
	b, _ := h.ReadFile("/proc/filesystems")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(strings.TrimPrefix(l, "nodev")) == "overlay" {
			return Result{Check: "overlayfs", Verdict: OK, Detail: "available: image layers mount as overlays"}
		}
	}
	return Result{Check: "overlayfs", Verdict: Fail, Detail: "not in /proc/filesystems: no container can get a root file system; modprobe overlay"}
}

func seccomp(h Host) Result {
	b, _ := h.ReadFile("/proc/self/status")
	if strings.Contains(string(b), "\nSeccomp:") {
		return Result{Check: "seccomp", Verdict: OK, Detail: "available: RuntimeDefault and Localhost profiles apply"}
	}
	return Result{Check: "seccomp", Verdict: Warn, Detail: "the kernel has no seccomp: pods asking for a seccomp profile fail to start; use a kernel built with CONFIG_SECCOMP"}
}

func lsm(h Host) Result {
	r := Result{Check: "AppArmor / SELinux", Verdict: OK}
	b, _ := h.ReadFile("/sys/module/apparmor/parameters/enabled")
	switch {
	case strings.TrimSpace(string(b)) == "Y":
		r.Detail = "AppArmor on: containers get ketch-default unless their pod names a profile"
	case exists(h, "/sys/fs/selinux/enforce"):
		r.Verdict = Warn
		r.Detail = "SELinux is on and AppArmor off: ketch applies no SELinux labels, so pods' seLinuxOptions are not enforced"
	default:
		r.Verdict = Warn
		r.Detail = "AppArmor is off: containers run without a mandatory access profile and pods' appArmorProfile is not enforced; boot with apparmor=1 security=apparmor to have one"
	}
	return r
}

func cniConfig(h Host, c Config) Result {
	r := Result{Check: "CNI", Verdict: OK}
	ents, _ := h.ReadDir(c.CNIConfDir)
	var conf string
	for _, e := range ents { // libcni takes the first by name
		if ext := filepath.Ext(e.Name()); ext == ".conflist" || ext == ".conf" || ext == ".json" {
			conf = filepath.Join(c.CNIConfDir, e.Name())
			break
		}
	}
	if conf == "" {
		r.Verdict = Warn
		r.Detail = "no network configuration in " + c.CNIConfDir + ": pods off the host network fail until one is installed (make run installs contrib/10-ketch.conflist into an empty directory)"
		return r
	}
	b, err := h.ReadFile(conf)
	var list struct {
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err == nil {
		err = json.Unmarshal(b, &list)
	}
	if err != nil {
		r.Verdict = Fail
		r.Detail = fmt.Sprintf("%s does not parse: %v", conf, err)
		return r
	}
	types := []string{list.Type}
	for _, p := range list.Plugins {
		types = append(types, p.Type)
	}
	var missing []string
	for _, t := range types {
		if t != "" && !slices.ContainsFunc(c.CNIBinDirs, func(d string) bool { return exists(h, filepath.Join(d, t)) }) {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		r.Verdict = Fail
		r.Detail = fmt.Sprintf("%s needs plugins %s, not found in %s: install them (Debian: containernetworking-plugins)", conf, strings.Join(missing, ", "), strings.Join(c.CNIBinDirs, ", "))
		return r
	}
	r.Detail = conf + ", its plugins found"
	return r
}

func registry(c Config) Result {
	if c.RegistryConfig == nil {
		return Result{Check: "registry config", Verdict: OK, Detail: "none"}
	}
	if err := c.RegistryConfig(); err != nil {
		return Result{Check: "registry config", Verdict: Fail, Detail: err.Error() + ": fix or remove the file; pulls from that registry would fail"}
	}
	return Result{Check: "registry config", Verdict: OK, Detail: "parses"}
}

// maxSocketPath is what fits in sockaddr_un.sun_path with its NUL.
const maxSocketPath = 107

func socket(h Host, c Config) Result {
	r := Result{Check: "socket", Verdict: OK, Detail: c.Socket + " is free"}
	switch {
	case !filepath.IsAbs(c.Socket) || len(c.Socket) > maxSocketPath:
		r.Verdict = Fail
		r.Detail = fmt.Sprintf("%q must be an absolute path of at most %d bytes", c.Socket, maxSocketPath)
	case h.SocketServed(c.Socket):
		r.Verdict = Warn
		r.Detail = c.Socket + " is served already (a running ketchd?): a second one would take it over; stop the first"
	}
	return r
}

// minFree is below what one image pull and its unpacking commonly need.
const minFree = 1 << 30

func disk(h Host, what, dir string) Result {
	r := Result{Check: "disk (" + what + ")", Verdict: OK}
	free, err := h.FreeBytes(dir)
	switch {
	case err != nil:
		r.Verdict = Fail
		r.Detail = fmt.Sprintf("%s: %v", dir, err)
	case free < minFree:
		r.Verdict = Warn
		r.Detail = fmt.Sprintf("%s: %d MiB free: pulls and container writes will fail soon; free some space", dir, free>>20)
	default:
		r.Detail = fmt.Sprintf("%s: %d GiB free", dir, free>>30)
	}
	return r
}
