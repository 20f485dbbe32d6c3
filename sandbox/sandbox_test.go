package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestResolvConf(t *testing.T) {
	got, err := resolvConf(&DNS{Servers: []string{"10.0.0.10", "fd00::a"}, Searches: []string{"ns.svc.local", "svc.local"}, Options: []string{"ndots:5", "edns0"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "nameserver 10.0.0.10\nnameserver fd00::a\nsearch ns.svc.local svc.local\noptions ndots:5 edns0\n"
	if string(got) != want {
		t.Errorf("resolv.conf =\n%s\nwant\n%s", got, want)
	}
	node, _ := os.ReadFile("/etc/resolv.conf")
	if got, err := resolvConf(nil); err != nil || string(got) != string(node) {
		t.Errorf("without DNS config: %q, %v; want the node's", got, err)
	}
}

func TestCheckSpec(t *testing.T) {
	ok := Spec{ID: "abc123", Hostname: "web-0"}
	for _, tc := range []struct {
		desc   string
		mutate func(*Spec)
		valid  bool
	}{
		{"valid", func(*Spec) {}, true},
		{"host network ignores the hostname", func(s *Spec) { s.HostNetwork, s.Hostname = true, "" }, true},
		{"no id", func(s *Spec) { s.ID = "" }, false},
		{"id with a slash", func(s *Spec) { s.ID = "../x" }, false},
		{"upper-case hostname", func(s *Spec) { s.Hostname = "Web" }, false},
		{"hostname too long", func(s *Spec) { s.Hostname = string(make([]byte, 64)) }, false},
		{"DNS server not an IP", func(s *Spec) { s.DNS = &DNS{Servers: []string{"ns1"}} }, false},
		{"IPC, network and UTS sysctls", func(s *Spec) {
			s.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "10", "net.ipv4.ip_forward": "1",
				"net/ipv4/conf/eth0.100/forwarding": "1", "kernel.domainname": "example"}
		}, true},
		{"sysctl of the node", func(s *Spec) { s.Sysctls = map[string]string{"vm.swappiness": "1"} }, false},
		{"kernel sysctl outside IPC", func(s *Spec) { s.Sysctls = map[string]string{"kernel.pid_max": "1"} }, false},
		{"IPC sysctl with the node's IPC", func(s *Spec) { s.HostIPC, s.Sysctls = true, map[string]string{"kernel.sem": "1"} }, false},
		{"net sysctl with the node's network", func(s *Spec) { s.HostNetwork, s.Sysctls = true, map[string]string{"net.core.somaxconn": "1"} }, false},
		{"domainname with the node's network", func(s *Spec) { s.HostNetwork, s.Sysctls = true, map[string]string{"kernel.domainname": "x"} }, false},
		{"sysctl path that escapes", func(s *Spec) { s.Sysctls = map[string]string{"net/../../etc/passwd": "x"} }, false},
		{"empty sysctl part", func(s *Spec) { s.Sysctls = map[string]string{"net..ipv4": "x"} }, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := ok
			tc.mutate(&s)
			err := checkSpec(s)
			if tc.valid != (err == nil) || (err != nil && !errdefs.IsInvalidArgument(err)) {
				t.Errorf("checkSpec = %v, want valid %v (or InvalidArgument)", err, tc.valid)
			}
		})
	}
}

// TestInstallRootfs: the rootfs is named by ketch-init's content, so a new
// binary gets a new one beside the old, and installing again reuses it.
func TestInstallRootfs(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ketch-init")
	if err := os.WriteFile(bin, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	first, err := installRootfs(filepath.Join(dir, "sandbox"), bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"ketch-init", "proc", "dev", "sys", "etc/hosts", "etc/resolv.conf", "etc/hostname"} {
		if _, err := os.Stat(filepath.Join(first, p)); err != nil {
			t.Errorf("rootfs lacks %s: %v", p, err)
		}
	}
	if again, err := installRootfs(filepath.Join(dir, "sandbox"), bin); err != nil || again != first {
		t.Errorf("second install: %q, %v; want %q", again, err, first)
	}
	if err := os.WriteFile(bin, []byte("v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	second, err := installRootfs(filepath.Join(dir, "sandbox"), bin)
	if err != nil || second == first {
		t.Fatalf("upgrade: %q, %v; want a new rootfs beside %q", second, err, first)
	}
	if b, _ := os.ReadFile(filepath.Join(first, "ketch-init")); string(b) != "v1" {
		t.Error("the upgrade changed the rootfs running pods use")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "sandbox")); len(ents) != 2 {
		t.Errorf("sandbox dir holds %d entries, want the two rootfs (no temp left)", len(ents))
	}
}

// TestCollectRootfs: after upgrades, a rootfs an older ketch-init
// installed is removed once no pod runs from it and no container
// bind-mounts its ketch-init, started (libcontainer's state) or only
// created (the shim's config); the current one always stays.
func TestCollectRootfs(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	install := func(version string) string {
		bin := filepath.Join(t.TempDir(), "ketch-init")
		if err := os.WriteFile(bin, []byte(version), 0o755); err != nil {
			t.Fatal(err)
		}
		r, err := installRootfs(filepath.Join(root, "sandbox"), bin)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	runFrom, mountedBy, createdWith, unused, current := install("v1"), install("v2"), install("v3"), install("v4"), install("v5")
	uses := map[string]string{
		"pods/p1/libcontainer/p1/state.json":  `{"config":{"rootfs":"` + runFrom + `"}}`,
		"pods/p1/libcontainer/c1/state.json":  `{"config":{"mounts":[{"source":"` + mountedBy + `/ketch-init"}]}}`,
		"pods/p2/libcontainer/c2/config.json": `{"mounts":[{"source":"` + createdWith + `/ketch-init"}]}`,
	}
	for f, content := range uses {
		path := filepath.Join(state, f)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := &Manager{o: Options{StateDir: state}, rootfs: current}
	for range 2 {
		if err := m.collectRootfs(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		rootfs string
		kept   bool
	}{{runFrom, true}, {mountedBy, true}, {createdWith, true}, {unused, false}, {current, true}} {
		if _, err := os.Stat(tc.rootfs); (err == nil) != tc.kept {
			t.Errorf("%s: exists %v, want %v", tc.rootfs, err == nil, tc.kept)
		}
	}
}

// TestReachableByPods: a directory on the way that others may not search
// is named in a FailedPrecondition, and no mode is changed.
func TestReachableByPods(t *testing.T) {
	base := t.TempDir()
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	closed := filepath.Join(base, "closed")
	leaf := filepath.Join(closed, "leaf")
	if err := os.MkdirAll(leaf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(closed, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := reachableByPods(leaf); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), closed) {
		t.Errorf("below a closed directory: %v", err)
	}
	if fi, _ := os.Stat(closed); fi.Mode().Perm() != 0o750 {
		t.Errorf("mode changed to %v", fi.Mode())
	}
	if err := os.Chmod(closed, 0o711); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parents are the test binary's: 0700 under /tmp.
	if err := os.Chmod(filepath.Dir(base), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := reachableByPods(leaf); err != nil {
		t.Errorf("all open: %v", err)
	}
}
