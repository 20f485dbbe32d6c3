package userns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"ketch.dev/ketch/sandbox/netns"
)

var mapping = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates user namespaces and mounts")
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// owner is the inode of the user namespace that owns namespace path.
func owner(t *testing.T, path string) uint64 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	user, err := unix.IoctlRetInt(fd, unix.NS_GET_USERNS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(user)
	var st unix.Stat_t
	if err := unix.Fstat(user, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// The helper is in a user namespace with the mappings and a network
// namespace it owns while fn runs, never runs itself, and is reaped after;
// a pinned namespace outlives it until Unpin.
func TestDoAndPin(t *testing.T) {
	requireRoot(t)
	pin := filepath.Join(t.TempDir(), "userns")
	var pid int
	var user uint64
	err := Do(mapping, mapping, true, func(p int) error {
		pid = p
		for _, f := range []string{"uid_map", "gid_map"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", p, f))
			if got := strings.Join(strings.Fields(string(b)), " "); err != nil || got != "0 100000 65536" {
				t.Errorf("%s = %q, %v", f, got, err)
			}
		}
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/setgroups", p)); strings.TrimSpace(string(b)) != "allow" {
			t.Errorf("setgroups = %q: containers could not set their groups", b)
		}
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); !strings.Contains(string(st), ") t ") {
			t.Errorf("the helper is not stopped by its tracer: %s", st)
		}
		user = inode(t, fmt.Sprintf("/proc/%d/ns/user", p))
		if user == inode(t, "/proc/self/ns/user") {
			t.Error("the helper is in the test's user namespace")
		}
		if got := owner(t, fmt.Sprintf("/proc/%d/ns/net", p)); got != user {
			t.Errorf("the helper's netns belongs to user namespace %d, not %d", got, user)
		}
		return Pin(fmt.Sprintf("/proc/%d/ns/user", p), pin)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("helper %d is still there", pid)
	}
	if got := inode(t, pin); got != user {
		t.Errorf("the pin holds namespace %d, want %d", got, user)
	}
	if err := Pin("/proc/self/ns/user", pin); !errdefs.IsAlreadyExists(err) {
		t.Errorf("a second pin at the same path: %v, want AlreadyExists", err)
	}
	for range 2 {
		if err := netns.Remove(pin); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pin is left: %v", err)
	}
}

// Without network the helper keeps the caller's network namespace; fn's
// error comes back, and the helper is reaped anyway.
func TestDoWithoutNetwork(t *testing.T) {
	requireRoot(t)
	var pid int
	boom := errors.New("boom")
	err := Do(mapping, mapping, false, func(p int) error {
		pid = p
		if inode(t, fmt.Sprintf("/proc/%d/ns/net", p)) != inode(t, "/proc/self/ns/net") {
			t.Error("a helper without network has a network namespace of its own")
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("Do = %v, want fn's error", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("helper %d is still there", pid)
	}
	if err := Do(nil, mapping, false, func(int) error { return nil }); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Do without uid mappings: %v, want InvalidArgument", err)
	}
}
