package shim_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/oci/runc"
	"ketch.dev/ketch/oci/shim"
)

// These tests drive the real ketch-shim binary, built as it ships, through
// the client, against the kernel and libcontainer: as root only.

var (
	shimBinary string // the ketch-shim under test
	initBinary string // ketch-init, built static as it ships
	rootfs     string // the sandbox rootfs, shared by every pod as ketch ships it
	skipReason string // set when the tests cannot run here
)

// ketchdEnv makes the test binary play a ketchd that launches a shim,
// starts its sandbox and exits without a goodbye.
const ketchdEnv = "KETCH_SHIM_TEST_KETCHD"

type ketchdJob struct {
	Launch  shim.LaunchOptions
	ID, Dir string // the pod's
	Sandbox *specs.Spec
}

func TestMain(m *testing.M) {
	// Tests move threads into pods' namespaces and let them die there
	// (inNamespace, newNetNS); a goroutine that exits locked on the main
	// thread would instead leave the main thread, and so /proc/self/ns and
	// every child forked from it, in that namespace. Keep them off it.
	runtime.LockOSThread()
	if job := os.Getenv(ketchdEnv); job != "" {
		os.Exit(playKetchd(job))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Geteuid() != 0 {
		skipReason = "needs root: creates namespaces, cgroups and containers"
		return m.Run()
	}
	// A shim whose ketchd died (TestShimOutlivesKetchd) is reparented to
	// us rather than to a PID 1 that may never reap it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "ketch-shim-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	shimBinary = filepath.Join(dir, "ketch-shim")
	initBinary = filepath.Join(dir, "ketch-init")
	// The shipping builds: the shim without cgo, its libcontainer helper
	// beside it with cgo (nsenter) and seccomp, which the containers need;
	// ketch-init static.
	if err := goBuild(root, shimBinary, "./cmd/ketch-shim", "CGO_ENABLED=0"); err != nil {
		fmt.Fprintln(os.Stderr, "build ketch-shim:", err)
		return 1
	}
	if err := goBuild(root, runc.Beside(shimBinary), "./cmd/ketch-runc", "CGO_ENABLED=1", "-tags", "seccomp"); err != nil {
		fmt.Fprintln(os.Stderr, "build ketch-runc:", err)
		return 1
	}
	if err := goBuild(root, initBinary, "./cmd/ketch-init", "CGO_ENABLED=0"); err != nil {
		fmt.Fprintln(os.Stderr, "build ketch-init:", err)
		return 1
	}
	rootfs = filepath.Join(dir, "rootfs")
	if err := makeRootfs(rootfs); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox rootfs:", err)
		return 1
	}
	return m.Run()
}

func goBuild(root, out, pkg, env string, flags ...string) error {
	args := append([]string{"build", "-trimpath", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// playKetchd launches a shim and starts its sandbox like ketchd, prints
// the init's PID, and exits with the connection still open.
func playKetchd(jobJSON string) int {
	var job ketchdJob
	if err := json.Unmarshal([]byte(jobJSON), &job); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := startShim(ctx, job.Launch, job.ID, job.Dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pid, err := c.StartSandbox(ctx, job.Sandbox)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(pid)
	return 0
}

func needRoot(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// startShim launches a shim that serves pod id alone, as ketchd does a
// pod's first, and connects to the pod.
func startShim(ctx context.Context, o shim.LaunchOptions, id, dir string) (*shim.Client, error) {
	if err := shim.Launch(ctx, o); err != nil {
		return nil, err
	}
	if err := shim.AddPod(ctx, o.Dir, id, dir); err != nil {
		return nil, err
	}
	return shim.Connect(ctx, dir, nil)
}

// pod is one fake pod: its directory, cgroup parent and shim.
type pod struct {
	id           string
	dir          string
	shimDir      string
	cgroupParent string // absolute, from each hierarchy's root
	shimPid      int
	shimFD       int // a pidfd on the shim, or -1
}

// newPod makes a pod directory and a cgroup parent of its own, all removed when the test ends, with whatever
// the test left running killed first.
func newPod(t *testing.T) *pod {
	t.Helper()
	needRoot(t)
	// Short paths: a unix socket path has to fit in 108 bytes.
	base, err := os.MkdirTemp("", "ksh-")
	if err != nil {
		t.Fatal(err)
	}
	id := "pod-" + strings.TrimPrefix(filepath.Base(base), "ksh-")
	p := &pod{
		id:           id,
		dir:          filepath.Join(base, id), // named by the pod's id, as ketchd's are
		shimDir:      filepath.Join(base, "shim"),
		cgroupParent: "/ketch-test-" + filepath.Base(base),
		shimFD:       -1,
	}
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := os.ReadFile(filepath.Join(base, "shim.log")); err == nil {
				t.Logf("shim log:\n%s", log)
			}
		}
		p.kill(t)
		if p.shimFD >= 0 {
			unix.Close(p.shimFD)
			// Reap the shim if it was orphaned to us; Launch's goroutine
			// reaps the ones the test started itself.
			_, _ = unix.Wait4(p.shimPid, nil, unix.WNOHANG, nil)
		}
		removeCgroupTree(t, p.cgroupParent)
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("remove %s: %v", base, err)
		}
	})
	for _, f := range []string{"hosts", "resolv.conf", "hostname"} {
		writeFile(t, filepath.Join(base, f), "# "+f+" of "+p.id+"\n")
	}
	return p
}

// config is what a valid sandbox spec for p is made from, as ketchd makes
// it (sandboxSpec).
func (p *pod) config() *oci.SandboxInput {
	base := filepath.Dir(p.dir)
	return &oci.SandboxInput{
		ID:             p.id,
		Rootfs:         rootfs,
		Hostname:       "ketch-test",
		CgroupParent:   p.cgroupParent,
		HostsPath:      filepath.Join(base, "hosts"),
		ResolvConfPath: filepath.Join(base, "resolv.conf"),
		HostnamePath:   filepath.Join(base, "hostname"),
	}
}

// sandboxSpec is the spec ketchd would send for in.
func sandboxSpec(t *testing.T, in *oci.SandboxInput) *specs.Spec {
	t.Helper()
	s, err := oci.SandboxSpec(*in)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (p *pod) launchOptions() shim.LaunchOptions {
	return shim.LaunchOptions{Binary: shimBinary, Dir: p.shimDir, Log: filepath.Join(filepath.Dir(p.dir), "shim.log")}
}

// launch starts a shim for p alone from the test process, as ketchd
// does.
func (p *pod) launch(t *testing.T) *shim.Client {
	t.Helper()
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	c, err := startShim(ctx(t), p.launchOptions(), p.id, p.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p.watchShim(t)
	return c
}

// watchShim learns the shim's PID from its pid file and opens a pidfd on
// it, which tells when the shim has exited whoever its parent is.
func (p *pod) watchShim(t *testing.T) {
	t.Helper()
	var err error
	if p.shimPid, err = shim.PID(p.shimDir); err != nil {
		t.Fatal(err)
	}
	if p.shimFD, err = unix.PidfdOpen(p.shimPid, 0); err != nil {
		t.Fatal(err)
	}
}

// shimExited waits up to d for the shim to exit.
func (p *pod) shimExited(d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(p.shimFD), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(d.Milliseconds()))
	return err == nil && n == 1 && fds[0].Revents&unix.POLLIN != 0
}

// kill ends whatever of p is still alive after a failed test: the shim and
// every process in p's cgroups.
func (p *pod) kill(t *testing.T) {
	if p.shimFD >= 0 && !p.shimExited(0) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err := shim.Connect(ctx, p.dir, nil)
		if err == nil {
			err = c.Shutdown(ctx)
		}
		if err != nil {
			t.Logf("shutdown of leftover shim %d: %v; killing it", p.shimPid, err)
			_ = unix.Kill(p.shimPid, unix.SIGKILL)
		}
		p.shimExited(5 * time.Second)
	}
	for _, mnt := range cgroupMounts(t) {
		_ = filepath.Walk(filepath.Join(mnt, p.cgroupParent), func(path string, fi os.FileInfo, err error) error {
			if err == nil && fi.Name() == "cgroup.procs" {
				for _, pid := range readPids(path) {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
			}
			return nil
		})
	}
}

// makeRootfs makes a sandbox rootfs like the one ketch ships.
func makeRootfs(dir string) error {
	for _, d := range []string{"proc", "dev", "sys", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"etc/hosts", "etc/resolv.conf", "etc/hostname"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(initBinary)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "ketch-init"), data, 0o755)
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// cgroupMounts lists the mount points of every cgroup hierarchy.
func cgroupMounts(t *testing.T) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mnts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				mnts = append(mnts, fields[4])
			}
		}
	}
	return mnts
}

// cgroupDirs lists the directories of cgroup path rel that exist in any
// hierarchy.
func cgroupDirs(t *testing.T, rel string) []string {
	var found []string
	for _, mnt := range cgroupMounts(t) {
		if _, err := os.Stat(filepath.Join(mnt, rel)); err == nil {
			found = append(found, filepath.Join(mnt, rel))
		}
	}
	return found
}

// removeCgroupTree removes rel and its descendants in every hierarchy,
// deepest first, as cgroupfs allows.
func removeCgroupTree(t *testing.T, rel string) {
	for _, dir := range cgroupDirs(t, rel) {
		var dirs []string
		_ = filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			for try := 0; try < 50; try++ {
				if err = unix.Rmdir(dirs[i]); err == nil || errors.Is(err, unix.ENOENT) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond) // a killed process leaves its cgroup a little later
			}
			if err != nil {
				t.Errorf("remove cgroup %s: %v", dirs[i], err)
			}
		}
	}
}

func readPids(path string) []int {
	data, _ := os.ReadFile(path)
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// newNetNS creates a network namespace bind-mounted on a file, as ketchd
// will under /run/ketch/netns, and removes it when the test ends.
func newNetNS(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "netns")
	writeFile(t, path, "")
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, now in the new netns, exits with the
		// goroutine instead of going back to the scheduler.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatal("create netns:", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount netns: %v", err)
		}
	})
	return path
}

// inNamespace runs f on a thread that has joined pid's namespace of kind
// ns ("uts", "net", "ipc"). The thread is discarded afterwards.
func inNamespace(t *testing.T, pid int, ns string, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, 0); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in %s namespace of %d: %v", ns, pid, err)
	}
}

// children lists the PIDs whose parent is pid.
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var kids []int
	for _, task := range tasks {
		kids = append(kids, readPids(task)...)
	}
	return kids
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

func procStatus(t *testing.T, pid int, key string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return ""
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
