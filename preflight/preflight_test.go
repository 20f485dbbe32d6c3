package preflight

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// fakeHost is a node made of a file map and a few answers.
type fakeHost struct {
	files   fstest.MapFS
	caps    uint64
	free    uint64
	release string
	served  bool
}

func (h fakeHost) ReadFile(name string) ([]byte, error) {
	return h.files.ReadFile(strings.TrimPrefix(name, "/"))
}
func (h fakeHost) Stat(name string) (fs.FileInfo, error) {
	return h.files.Stat(strings.TrimPrefix(name, "/"))
}
func (h fakeHost) ReadDir(name string) ([]fs.DirEntry, error) {
	return h.files.ReadDir(strings.TrimPrefix(name, "/"))
}
func (h fakeHost) EffectiveCaps() (uint64, error) { return h.caps, nil }
func (h fakeHost) FreeBytes(string) (uint64, error) {
	if h.free == 0 {
		return 0, os.ErrPermission
	}
	return h.free, nil
}
func (h fakeHost) KernelRelease() string    { return h.release }
func (h fakeHost) SocketServed(string) bool { return h.served }

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

var dir = &fstest.MapFile{Mode: fs.ModeDir}

// goodHost is a cgroup v2 node with systemd, AppArmor and a CNI network.
func goodHost() fakeHost {
	return fakeHost{
		files: fstest.MapFS{
			"sys/fs/cgroup/cgroup.controllers":       file("cpuset cpu io memory hugetlb pids\n"),
			"run/systemd/system":                     dir,
			"proc/sys/user/max_user_namespaces":      file("63000\n"),
			"proc/filesystems":                       file("nodev\tsysfs\nnodev\toverlay\n\text4\n"),
			"proc/self/status":                       file("Name:\tketchd\nSeccomp:\t0\n"),
			"proc/cgroups":                           file("#subsys_name\thierarchy\tnum_cgroups\tenabled\nhugetlb\t0\t1\t1\n"),
			"sys/module/apparmor/parameters/enabled": file("Y\n"),
			"etc/cni/net.d/10-ketch.conflist":        file(`{"cniVersion":"1.0.0","name":"ketch","plugins":[{"type":"bridge"},{"type":"portmap"}]}`),
			"usr/lib/cni/bridge":                     file(""),
			"usr/lib/cni/portmap":                    file(""),
		},
		caps: 1 << capSysResourceBit, free: 100 << 30, release: "6.18.0-1-amd64",
	}
}

var goodConfig = Config{CgroupDriver: "systemd", CNIConfDir: "/etc/cni/net.d", CNIBinDirs: []string{"/usr/lib/cni", "/opt/cni/bin"},
	Socket: "/run/ketch/ketch.sock", Root: "/var/lib/ketch", State: "/run/ketch"}

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		change func(*fakeHost, *Config)
		check  string
		want   Verdict
		says   string
	}{
		{desc: "a good node", change: func(*fakeHost, *Config) {}, check: "", want: OK},
		{desc: "cgroup v1 hybrid", check: "cgroup version", want: Warn, says: "failCgroupV1",
			change: func(h *fakeHost, _ *Config) { h.v1(); h.files["sys/fs/cgroup/hugetlb"] = dir }},
		{desc: "systemd driver without systemd", check: "cgroup version", want: Fail, says: "cgroupfs",
			change: func(h *fakeHost, _ *Config) { delete(h.files, "run/systemd/system") }},
		{desc: "no systemd", check: "systemd", want: Warn, says: "cgroupfs",
			change: func(h *fakeHost, c *Config) { delete(h.files, "run/systemd/system"); c.CgroupDriver = "cgroupfs" }},
		{desc: "v2 without pids", check: "cgroup controllers", want: Fail, says: "pids",
			change: func(h *fakeHost, _ *Config) { h.files["sys/fs/cgroup/cgroup.controllers"] = file("cpu io memory\n") }},
		{desc: "v1 with hugetlb compiled in, not mounted", check: "cgroup controllers", want: Warn, says: "hugetlb",
			change: func(h *fakeHost, _ *Config) { h.v1() }},
		{desc: "v1 with hugetlb not in the kernel", check: "cgroup controllers", want: OK,
			change: func(h *fakeHost, _ *Config) { h.v1(); h.files["proc/cgroups"] = file("hugetlb\t0\t1\t0\n") }},
		{desc: "v1 without freezer", check: "cgroup controllers", want: Fail, says: "freezer",
			change: func(h *fakeHost, _ *Config) { h.v1(); delete(h.files, "sys/fs/cgroup/freezer") }},
		{desc: "no CAP_SYS_RESOURCE", check: "CAP_SYS_RESOURCE", want: Warn, says: "oom_score_adj",
			change: func(h *fakeHost, _ *Config) { h.caps = 0 }},
		{desc: "user namespaces off", check: "user namespaces", want: Warn, says: "max_user_namespaces",
			change: func(h *fakeHost, _ *Config) { h.files["proc/sys/user/max_user_namespaces"] = file("0\n") }},
		{desc: "a kernel without idmapped overlays", check: "user namespaces", want: Warn, says: "5.19",
			change: func(h *fakeHost, _ *Config) { h.release = "5.10.0-30-amd64" }},
		{desc: "no overlayfs", check: "overlayfs", want: Fail, says: "modprobe",
			change: func(h *fakeHost, _ *Config) { h.files["proc/filesystems"] = file("\text4\n") }},
		{desc: "no seccomp", check: "seccomp", want: Warn, says: "CONFIG_SECCOMP",
			change: func(h *fakeHost, _ *Config) { h.files["proc/self/status"] = file("Name:\tketchd\n") }},
		{desc: "AppArmor off", check: "AppArmor / SELinux", want: Warn, says: "AppArmor is off",
			change: func(h *fakeHost, _ *Config) { h.files["sys/module/apparmor/parameters/enabled"] = file("N\n") }},
		{desc: "no CNI config", check: "CNI", want: Warn, says: "no network configuration",
			change: func(h *fakeHost, _ *Config) { delete(h.files, "etc/cni/net.d/10-ketch.conflist") }},
		{desc: "a CNI plugin missing", check: "CNI", want: Fail, says: "portmap",
			change: func(h *fakeHost, _ *Config) { delete(h.files, "usr/lib/cni/portmap") }},
		{desc: "a CNI config that does not parse", check: "CNI", want: Fail, says: "does not parse",
			change: func(h *fakeHost, _ *Config) { h.files["etc/cni/net.d/10-ketch.conflist"] = file("{") }},
		{desc: "a registry config that does not parse", check: "registry config", want: Fail, says: "hosts.toml",
			change: func(_ *fakeHost, c *Config) {
				c.RegistryConfig = func() error { return errors.New("x/hosts.toml: bad") }
			}},
		{desc: "a socket served already", check: "socket", want: Warn, says: "served already",
			change: func(h *fakeHost, _ *Config) { h.served = true }},
		{desc: "a socket path too long", check: "socket", want: Fail, says: "107 bytes",
			change: func(_ *fakeHost, c *Config) { c.Socket = "/" + strings.Repeat("s", 120) }},
		{desc: "little disk", check: "disk (root)", want: Warn, says: "MiB free",
			change: func(h *fakeHost, _ *Config) { h.free = 100 << 20 }},
		{desc: "an unreadable root", check: "disk (root)", want: Fail,
			change: func(h *fakeHost, _ *Config) { h.free = 0 }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			h, c := goodHost(), goodConfig
			tc.change(&h, &c)
			rs := Run(h, c)
			for _, r := range rs {
				if tc.check == "" && r.Verdict != OK {
					t.Errorf("%s: %s (%s) on a good node", r.Check, r.Verdict, r.Detail)
				}
				if r.Check == tc.check && (r.Verdict != tc.want || !strings.Contains(r.Detail, tc.says)) {
					t.Errorf("%s: %s (%s), want %s saying %q", r.Check, r.Verdict, r.Detail, tc.want, tc.says)
				}
			}
			if Failed(rs) != (tc.want == Fail) {
				t.Errorf("Failed = %v for %s", Failed(rs), tc.want)
			}
		})
	}
}

// v1 makes the node a cgroup v1 one with the usual controllers mounted,
// hugetlb left out.
func (h *fakeHost) v1() {
	delete(h.files, "sys/fs/cgroup/cgroup.controllers")
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "devices", "freezer", "blkio"} {
		h.files["sys/fs/cgroup/"+c] = dir
	}
}

// The node the test runs on answers every probe.
func TestNode(t *testing.T) {
	var n Node
	if n.KernelRelease() == "" {
		t.Error("no kernel release")
	}
	if _, err := n.EffectiveCaps(); err != nil {
		t.Error(err)
	}
	if free, err := n.FreeBytes(t.TempDir() + "/not/made/yet"); err != nil || free == 0 {
		t.Errorf("free under a directory to be made: %d, %v", free, err)
	}
	if n.SocketServed(t.TempDir() + "/none.sock") {
		t.Error("a missing socket served")
	}
}
