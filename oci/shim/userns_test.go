package shim_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// A sandbox in a user namespace ketchd made (with the network namespace
// it owns): ketch-init joins it, makes its PID, IPC and UTS namespaces in
// it, and may write the net sysctls of its own network namespace. A
// namespace whose mappings are not the config's is refused, and leaves
// nothing behind.
func TestSandboxInUserNamespace(t *testing.T) {
	p := newPod(t)
	// runc mounts the rootfs from inside the namespace, where the test's
	// 0700 directory is nobody's: the pod's root must be able to search it.
	if err := os.Chmod(filepath.Dir(rootfs), 0o711); err != nil {
		t.Fatal(err)
	}
	holder := usernsHolder(t)
	c := p.launch(t)
	mapping := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	cfg := p.config()
	cfg.UserNSPath = fmt.Sprintf("/proc/%d/ns/user", holder)
	cfg.NetNSPath = fmt.Sprintf("/proc/%d/ns/net", holder)
	cfg.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "80"}

	cfg.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
	cfg.GIDMappings = cfg.UIDMappings
	if _, err := c.StartSandbox(ctx(t), sandboxSpec(t, cfg)); err == nil {
		t.Fatal("a user namespace with other mappings than the config's was joined")
	}
	checkNothingLeft(t, p)

	cfg.UIDMappings, cfg.GIDMappings = mapping, mapping
	pid, err := c.StartSandbox(ctx(t), sandboxSpec(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	userns := nsInode(t, cfg.UserNSPath)
	if got := nsInode(t, fmt.Sprintf("/proc/%d/ns/user", pid)); got != userns {
		t.Errorf("init's user namespace %d, want the pinned %d", got, userns)
	}
	if m := strings.Fields(readProc(t, pid, "uid_map")); strings.Join(m, " ") != "0 100000 65536" {
		t.Errorf("init's uid_map = %v", m)
	}
	for _, ns := range []string{"pid", "ipc", "uts", "net"} {
		if owner := nsOwner(t, fmt.Sprintf("/proc/%d/ns/%s", pid, ns)); owner != userns {
			t.Errorf("init's %s namespace belongs to user namespace %d, not the pod's %d", ns, owner, userns)
		}
	}
	// Net sysctls read as the reader's network namespace has them.
	inNamespace(t, pid, "net", func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
		if got := strings.TrimSpace(string(b)); err != nil || got != "80" {
			t.Errorf("net.ipv4.ip_unprivileged_port_start = %q, %v; want 80", got, err)
		}
		return nil
	})
	if err := c.Shutdown(ctx(t)); err != nil {
		t.Fatal(err)
	}
	checkShutdown(t, p)
}

// A user namespace that is not one is refused before anything is made.
func TestStartSandboxBadUserNamespace(t *testing.T) {
	p := newPod(t)
	c := p.launch(t)
	holder := usernsHolder(t)
	mapping := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	// What oci.SandboxSpec refuses (mappings without a namespace, a
	// namespace without mappings, the host's PID namespace in one) is
	// tested there; a namespace of another kind only the shim can tell.
	cfg := p.config()
	cfg.UserNSPath, cfg.UIDMappings, cfg.GIDMappings = fmt.Sprintf("/proc/%d/ns/net", holder), mapping, mapping
	_, err := c.StartSandbox(ctx(t), sandboxSpec(t, cfg))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "another kind") {
		t.Fatalf("got %v, want InvalidArgument mentioning %q", err, "another kind")
	}
	checkNothingLeft(t, p)
}

// usernsHolder starts a process in a new user namespace mapping 0-65535
// to 100000 and up, and a network namespace that namespace owns, as
// ketchd's pins hold them; it lives as long as the test.
func usernsHolder(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: m, GidMappings: m, GidMappingsEnableSetgroups: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

// nsOwner is the inode of the user namespace that owns namespace path.
func nsOwner(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		t.Fatalf("owner of %s: %v", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func readProc(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
