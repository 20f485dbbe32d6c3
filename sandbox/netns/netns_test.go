package netns

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and mounts")
	}
}

// testDir is a namespace directory that is unmounted again when the test
// ends, after every pin in it has been removed (cleanups run last-in first-out).
func testDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "netns")
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func create(t *testing.T, dir, id string) string {
	t.Helper()
	path, err := Create(dir, id)
	if err != nil {
		t.Fatalf("Create(%s, %s): %v", dir, id, err)
	}
	t.Cleanup(func() {
		if err := Remove(path); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return path
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestCreateIsolatedNetnsWithLoopbackUp(t *testing.T) {
	requireRoot(t)
	path := create(t, testDir(t), "pod1")

	if err := Check(path); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if inode(t, path) == inode(t, "/proc/self/ns/net") {
		t.Fatal("pinned netns is the host's")
	}
	// Look from outside, the way an operator would with `ip netns exec`.
	out, err := exec.Command("nsenter", "--net="+path, "ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter ip link: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], " lo:") || !strings.Contains(lines[0], ",UP") {
		t.Fatalf("links in new netns = %q, want only lo, up", out)
	}
}

// A thread left in a pod's netns would run arbitrary goroutines there later:
// every thread of the process must still be in the host netns afterwards.
func TestCreateLeavesCallerThreadsInHostNetns(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	host := inode(t, "/proc/thread-self/ns/net")
	for i := range 20 {
		create(t, dir, "pod"+string(rune('a'+i)))
		if got := inode(t, "/proc/thread-self/ns/net"); got != host {
			t.Fatalf("caller thread moved to netns %d, host is %d", got, host)
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var st unix.Stat_t
			if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
				errs <- err
			} else if st.Ino != host {
				errs <- errors.New("a thread runs in a pod netns")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if got := inode(t, filepath.Join("/proc/self/task", task.Name(), "ns/net")); got != host {
			t.Errorf("thread %s is in netns %d, host is %d", task.Name(), got, host)
		}
	}
}

func TestCreateMakesDirSharedMount(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	path := create(t, dir, "pod1")
	create(t, dir, "pod2") // the directory is prepared once, not stacked

	mounts := mountinfo(t)
	if n := len(mounts[dir]); n != 1 {
		t.Fatalf("%s is mounted %d times, want once", dir, n)
	}
	if !strings.Contains(mounts[dir][0], "shared:") {
		t.Errorf("%s is not a shared mount: %s", dir, mounts[dir][0])
	}
	if len(mounts[path]) != 1 {
		t.Errorf("%s mounted %d times, want once", path, len(mounts[path]))
	}
}

// mountinfo maps mount points to their optional-fields text.
func mountinfo(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string][]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 6 {
			m[fields[4]] = append(m[fields[4]], strings.Join(fields[6:], " "))
		}
	}
	return m
}

func TestCreateRejects(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	create(t, dir, "taken")
	for _, tc := range []struct {
		desc, id string
		want     error
	}{
		{"empty name", "", errdefs.ErrInvalidArgument},
		{"dot", ".", errdefs.ErrInvalidArgument},
		{"dot dot", "..", errdefs.ErrInvalidArgument},
		{"slash", "a/b", errdefs.ErrInvalidArgument},
		{"already pinned", "taken", errdefs.ErrAlreadyExists},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			path, err := Create(dir, tc.id)
			if !errors.Is(err, tc.want) {
				_ = Remove(path)
				t.Fatalf("Create(%q) = %q, %v; want %v", tc.id, path, err, tc.want)
			}
		})
	}
	if err := Check(filepath.Join(dir, "taken")); err != nil {
		t.Errorf("a rejected duplicate broke the existing netns: %v", err)
	}
}

func TestRemoveIsIdempotent(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	path, err := Create(dir, "pod1")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := Remove(path); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point still there: %v", err)
	}
	if m := mountinfo(t)[path]; len(m) != 0 {
		t.Errorf("still mounted: %v", m)
	}
	if err := Check(path); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Check after Remove = %v, want NotFound", err)
	}
	if err := Remove(filepath.Join(dir, "never-created")); err != nil {
		t.Errorf("Remove of a never-created netns: %v", err)
	}
}

func TestCheck(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	live := create(t, dir, "live")

	unmounted := create(t, dir, "unmounted")
	if err := unix.Unmount(unmounted, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	otherKind := filepath.Join(dir, "uts")
	if err := os.WriteFile(otherKind, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("/proc/self/ns/uts", otherKind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(otherKind) })

	for _, tc := range []struct {
		desc, path string
		want       error
	}{
		{"pinned netns", live, nil},
		{"missing file", filepath.Join(dir, "missing"), errdefs.ErrNotFound},
		{"unmounted file", unmounted, errdefs.ErrNotFound},
		{"uts namespace", otherKind, errdefs.ErrNotFound},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := Check(tc.path)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Check(%s) = %v, want %v", tc.path, err, tc.want)
			}
		})
	}
}

func BenchmarkCreateRemove(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	dir := filepath.Join(b.TempDir(), "netns")
	b.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	for b.Loop() {
		path, err := Create(dir, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := Remove(path); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDoRunsInNetnsAndKeepsSockets(t *testing.T) {
	requireRoot(t)
	path := create(t, testDir(t), "pod1")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	host := inode(t, "/proc/thread-self/ns/net")

	var inside uint64
	var l net.Listener
	err := Do(path, func() error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		inside = st.Ino
		var err error
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	defer l.Close()
	if inside != inode(t, path) {
		t.Errorf("fn ran in netns %d, want %d", inside, inode(t, path))
	}
	if got := inode(t, "/proc/thread-self/ns/net"); got != host {
		t.Errorf("caller thread moved to netns %d", got)
	}
	// The listener is on the pod's lo, so the host's lo cannot reach it.
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Errorf("host reached %s, which listens inside the pod netns", l.Addr())
	}
	if err := Do(filepath.Join(filepath.Dir(path), "missing"), func() error { return nil }); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Do in a missing netns = %v, want NotFound", err)
	}
}

// Adopt pins the netns a process made, with lo up, so it outlives the
// process; a failed pin leaves no mount point.
func TestAdopt(t *testing.T) {
	requireRoot(t)
	dir := testDir(t)
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "ns/net")
	want := inode(t, src)
	path, err := Adopt(dir, "pod1", src)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Remove(path) })
	if err := Check(path); err != nil || inode(t, path) != want {
		t.Fatalf("pin %s: %v, inode %d, want the process's %d", path, err, inode(t, path), want)
	}
	out, err := exec.Command("nsenter", "--net="+path, "ip", "-o", "link", "show", "lo").CombinedOutput()
	if err != nil || !strings.Contains(string(out), ",UP") {
		t.Errorf("lo in the adopted netns: %s, %v; want up", out, err)
	}
	if _, err := Adopt(dir, "pod2", "/proc/self/ns/nonexistent"); err == nil {
		t.Error("Adopt of a missing namespace succeeded")
	}
	if _, err := os.Lstat(filepath.Join(dir, "pod2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed Adopt left its mount point: %v", err)
	}
}
