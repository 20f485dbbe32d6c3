package shim_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/oci/shim"
)

func TestSandboxLifecycle(t *testing.T) {
	p := newPod(t)
	netns := newNetNS(t)
	c := p.launch(t)

	cfg := p.config()
	cfg.NetNSPath = netns
	cfg.OOMScoreAdj = -998
	cfg.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ip_unprivileged_port_start": "80"}
	pid, err := c.StartSandbox(ctx(t), sandboxSpec(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	if !alive(pid) {
		t.Fatalf("init %d is not running", pid)
	}
	checkSandbox(t, p, pid, netns)

	if _, err := c.StartSandbox(ctx(t), sandboxSpec(t, cfg)); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second StartSandbox: got %v, want AlreadyExists", err)
	}
	// Refused, and reaped: the error tells how the second shim ended.
	if err := shim.Launch(ctx(t), p.launchOptions()); err == nil || !strings.Contains(err.Error(), "already serves") || !strings.Contains(err.Error(), "exit status") {
		t.Errorf("second shim in the same directory: got %v, want a refusal and its exit status", err)
	}
	if err := shim.AddPod(ctx(t), p.shimDir, p.id, p.dir); !errdefs.IsAlreadyExists(err) {
		t.Errorf("the pod added again: got %v, want AlreadyExists", err)
	}

	// ketchd goes away and comes back: the shim and the pod stay.
	c.Close()
	if !alive(p.shimPid) || !alive(pid) {
		t.Fatal("closing the client stopped the shim or the pod")
	}
	c, err = shim.Connect(ctx(t), p.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.State(ctx(t), p.id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != shim.StatusRunning || st.Pid != pid || st.Exit != nil {
		t.Errorf("State after reconnect = %+v, want running with pid %d", st, pid)
	}

	// kill -9 from outside, as an OOM kill or an admin would.
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exit, err := c.Wait(ctx(t), p.id)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Code != 137 || exit.Signal != syscall.SIGKILL || time.Since(exit.At) > time.Minute {
		t.Errorf("Wait = %+v, want 137 by SIGKILL just now", exit)
	}
	st, err = c.State(ctx(t), p.id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != shim.StatusStopped || st.Exit == nil || !reflect.DeepEqual(*st.Exit, exit) {
		t.Errorf("State after kill = %+v, want stopped with %+v", st, exit)
	}
	if rec, err := shim.ReadExit(p.dir, p.id); err != nil || rec.Code != 137 || !rec.At.Equal(exit.At) {
		t.Errorf("exit record = %+v, %v; want %+v", rec, err, exit)
	}
	if err := c.Kill(ctx(t), p.id, syscall.SIGTERM, false); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Kill of a stopped sandbox: got %v, want FailedPrecondition", err)
	}
	if _, err := c.State(ctx(t), "no-such-container"); !errdefs.IsNotFound(err) {
		t.Errorf("State of an unknown id: got %v, want NotFound", err)
	}

	if err := c.Shutdown(ctx(t)); err != nil {
		t.Fatal(err)
	}
	checkShutdown(t, p)
	if _, err := shim.ReadExit(p.dir, p.id); err != nil {
		t.Errorf("the exit record must outlive the shim: %v", err)
	}
}

// checkSandbox checks every promise StartSandbox makes about the init.
func checkSandbox(t *testing.T, p *pod, pid int, netns string) {
	t.Helper()
	if nsInode(t, fmt.Sprintf("/proc/%d/ns/pid", pid)) == nsInode(t, fmt.Sprintf("/proc/%d/ns/pid", p.shimPid)) {
		t.Error("init shares the shim's PID namespace")
	}
	if f := strings.Fields(procStatus(t, pid, "NSpid")); len(f) != 2 || f[1] != "1" {
		t.Errorf("NSpid = %v, want PID 1 in its own namespace", f)
	}
	for _, ns := range []string{"ipc", "uts", "mnt"} {
		if nsInode(t, fmt.Sprintf("/proc/%d/ns/%s", pid, ns)) == nsInode(t, fmt.Sprintf("/proc/%d/ns/%s", p.shimPid, ns)) {
			t.Errorf("init shares the host's %s namespace", ns)
		}
	}
	if nsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid)) != nsInode(t, netns) {
		t.Error("init is not in the requested netns")
	}
	inNamespace(t, pid, "uts", func() error {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return err
		}
		if h := unix.ByteSliceToString(u.Nodename[:]); h != "ketch-test" {
			t.Errorf("hostname = %q, want ketch-test", h)
		}
		return nil
	})
	inNamespace(t, pid, "ipc", func() error { return checkSysctl(t, "kernel/shm_rmid_forced", "1") })
	inNamespace(t, pid, "net", func() error { return checkSysctl(t, "net/ipv4/ip_unprivileged_port_start", "80") })

	cgroup := p.cgroupParent + "/" + p.id
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if slices.Contains([]string{"memory", "pids", "devices", "freezer"}, parts[1]) && parts[2] != cgroup {
			t.Errorf("init's cgroup: %s, want %s", line, cgroup)
		}
	}
	if len(cgroupDirs(t, cgroup)) == 0 {
		t.Errorf("no cgroup %s", cgroup)
	}

	own, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", p.shimPid))
	want := -998
	if capEff, _ := strconv.ParseUint(procStatus(t, p.shimPid, "CapEff"), 16, 64); capEff&(1<<unix.CAP_SYS_RESOURCE) == 0 {
		ownAdj, _ := strconv.Atoi(strings.TrimSpace(string(own)))
		want = max(want, ownAdj)
	}
	if got, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid)); strings.TrimSpace(string(got)) != strconv.Itoa(want) {
		t.Errorf("oom_score_adj = %s, want %d", got, want)
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if v := procStatus(t, pid, k); v != "0000000000000000" {
			t.Errorf("%s = %s, want none", k, v)
		}
	}
	if v := procStatus(t, pid, "NoNewPrivs"); v != "1" {
		t.Errorf("NoNewPrivs = %s", v)
	}

	mounts := mountsOf(t, pid)
	if m := mounts["/"]; !strings.HasPrefix(m.options, "ro") {
		t.Errorf("rootfs mounted %q, want read-only", m.options)
	}
	if m := mounts["/dev/shm"]; m.fstype != "tmpfs" {
		t.Errorf("/dev/shm is %q, want tmpfs", m.fstype)
	}
	for _, f := range []string{"hosts", "resolv.conf", "hostname"} {
		got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/%s", pid, f))
		if err != nil || string(got) != "# "+f+" of "+p.id+"\n" {
			t.Errorf("/etc/%s in the sandbox = %q, %v", f, got, err)
		}
		if m := mounts["/etc/"+f]; !strings.HasPrefix(m.options, "ro") {
			t.Errorf("/etc/%s mounted %q, want read-only", f, m.options)
		}
	}
}

func checkSysctl(t *testing.T, name, want string) error {
	got, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(got)) != want {
		t.Errorf("sysctl %s = %s, want %s", name, got, want)
	}
	return nil
}

type mount struct{ fstype, options string }

// mountsOf maps pid's mount points to their type and per-mount options.
func mountsOf(t *testing.T, pid int) map[string]mount {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]mount{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		i := slices.Index(f, "-")
		if i < 0 || i+1 >= len(f) {
			continue
		}
		m[f[4]] = mount{fstype: f[i+1], options: f[5]}
	}
	return m
}

// checkShutdown checks that a shut-down shim left nothing but exit records.
func checkShutdown(t *testing.T, p *pod) {
	t.Helper()
	if !p.shimExited(10 * time.Second) {
		t.Error("the shim did not exit after Shutdown")
	}
	if dirs := cgroupDirs(t, p.cgroupParent+"/"+p.id); len(dirs) > 0 {
		t.Errorf("cgroups left: %v", dirs)
	}
	for _, f := range []string{"libcontainer", "shim"} {
		if _, err := os.Lstat(filepath.Join(p.dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left in the pod directory (%v)", f, err)
		}
	}
	for _, f := range []string{"shim.sock", "io.sock", "shim.pid"} {
		if _, err := os.Stat(filepath.Join(p.shimDir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left in the shim's directory (%v)", f, err)
		}
	}
}

// A ketchd that launched the shim and died: the shim, its own session
// leader, keeps the pod, and a new client finds both.
func TestShimOutlivesKetchd(t *testing.T) {
	p := newPod(t)
	cfg := p.config() // the host's netns
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	job, err := json.Marshal(ketchdJob{Launch: p.launchOptions(), ID: p.id, Dir: p.dir, Sandbox: sandboxSpec(t, cfg)})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), ketchdEnv+"="+string(job))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	// Watch the shim before anything can fail, so that it is cleaned up.
	if _, serr := os.Stat(filepath.Join(p.shimDir, "shim.pid")); serr == nil {
		p.watchShim(t)
	}
	if err != nil {
		t.Fatalf("ketchd: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	if !alive(p.shimPid) || !alive(pid) {
		t.Fatal("the shim or the pod died with ketchd")
	}
	if sid, _ := unix.Getsid(p.shimPid); sid != p.shimPid {
		t.Errorf("shim session %d, want its own (%d)", sid, p.shimPid)
	}
	if nsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid)) != nsInode(t, fmt.Sprintf("/proc/%d/ns/net", p.shimPid)) {
		t.Error("with no netns path the sandbox must have the host's netns")
	}

	c, err := shim.Connect(ctx(t), p.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.State(ctx(t), p.id)
	if err != nil || st.Status != shim.StatusRunning || st.Pid != pid {
		t.Fatalf("State = %+v, %v; want running with pid %d", st, err, pid)
	}
	// ketch-init exits 0 on TERM: the shim, not ketchd, is its parent now
	// and still gets the code. StartSandbox returns as ketch-init is
	// exec'd; a TERM before its signal.Notify makes the Go runtime exit 2,
	// so give it time to get there.
	time.Sleep(200 * time.Millisecond)
	if err := c.Kill(ctx(t), p.id, syscall.SIGTERM, false); err != nil {
		t.Fatal(err)
	}
	exit, err := c.Wait(ctx(t), p.id)
	if err != nil || exit.Code != 0 || exit.Signal != 0 {
		t.Errorf("Wait after TERM = %+v, %v; want exit 0", exit, err)
	}
	if err := c.Shutdown(ctx(t)); err != nil {
		t.Fatal(err)
	}
	checkShutdown(t, p)
}

// Every bad request fails with a clear error and leaves nothing behind, and
// the shim can still start the sandbox afterwards.
func TestStartSandboxBadInput(t *testing.T) {
	p := newPod(t)
	c := p.launch(t)
	vanished := filepath.Join(t.TempDir(), "netns") // a netns file whose mount is gone
	writeFile(t, vanished, "")
	noExec := filepath.Join(t.TempDir(), "rootfs") // a rootfs whose ketch-init cannot run
	if err := makeRootfs(noExec); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(noExec, "ketch-init"), 0o644); err != nil {
		t.Fatal(err)
	}

	// What oci.SandboxSpec refuses is tested there; these are the node's
	// side of a spec, which only the shim can check.
	for _, tc := range []struct {
		desc   string
		change func(*specs.Spec)
		is     func(error) bool
		want   string
	}{
		{"missing rootfs", func(s *specs.Spec) { s.Root.Path = "/nonexistent/rootfs" }, errdefs.IsNotFound, "rootfs"},
		{"relative rootfs", func(s *specs.Spec) { s.Root.Path = "rootfs" }, errdefs.IsInvalidArgument, "absolute"},
		{"no init in rootfs", func(s *specs.Spec) { s.Process.Args = []string{"/no-init"} }, errdefs.IsNotFound, "/no-init"},
		{"missing netns", joinNetNS("/run/ketch/netns/nonexistent"), errdefs.IsNotFound, "network namespace"},
		{"vanished netns", joinNetNS(vanished), errdefs.IsInvalidArgument, "not a namespace"},
		{"missing shm dir", bindSource("/dev/shm", "/nonexistent/shm"), errdefs.IsNotFound, "shm"},
		{"missing hosts file", bindSource("/etc/hosts", "/nonexistent/hosts"), errdefs.IsNotFound, "hosts"},
		{"net sysctl in the host's netns", func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"} }, errdefs.IsInvalidArgument, "sysctl"},
		{"non-namespaced sysctl", func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"vm.swappiness": "1"} }, errdefs.IsInvalidArgument, "sysctl"},
		// Past every check, into libcontainer: the failure must still undo
		// the cgroup, the state and the half-started init.
		{"init not executable", func(s *specs.Spec) { s.Root.Path = noExec }, func(error) bool { return true }, "permission denied"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			spec := sandboxSpec(t, p.config())
			tc.change(spec)
			_, err := c.StartSandbox(ctx(t), spec)
			if err == nil || !tc.is(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error of the right kind mentioning %q", err, tc.want)
			}
			t.Log(err)
			checkNothingLeft(t, p)
		})
	}
	if _, err := os.Stat("/run/systemd/system"); os.IsNotExist(err) {
		cfg := p.config()
		cfg.CgroupDriver, cfg.CgroupParent = oci.CgroupDriverSystemd, ""
		if _, err := c.StartSandbox(ctx(t), sandboxSpec(t, cfg)); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("systemd driver without systemd: got %v, want FailedPrecondition", err)
		}
	}

	pid, err := c.StartSandbox(ctx(t), sandboxSpec(t, p.config()))
	if err != nil {
		t.Fatalf("StartSandbox after the failures: %v", err)
	}
	if !alive(pid) {
		t.Fatal("init not running")
	}
	if err := c.Kill(ctx(t), p.id, syscall.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	if exit, err := c.Wait(ctx(t), p.id); err != nil || exit.Code != 137 {
		t.Errorf("Wait after Kill(all) = %+v, %v; want 137", exit, err)
	}
	if err := c.Kill(ctx(t), p.id, 0, false); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Kill with signal 0: got %v, want InvalidArgument", err)
	}
	if err := c.Shutdown(ctx(t)); err != nil {
		t.Fatal(err)
	}
	checkShutdown(t, p)
}

func checkNothingLeft(t *testing.T, p *pod) {
	t.Helper()
	// Give a killed half-started init the moment the kernel needs to
	// leave its cgroup and be reaped.
	deadline := time.Now().Add(2 * time.Second)
	for {
		kids := children(p.shimPid)
		dirs := cgroupDirs(t, p.cgroupParent+"/"+p.id)
		entries, _ := os.ReadDir(filepath.Join(p.dir, "libcontainer"))
		_, exitErr := os.Stat(filepath.Join(p.dir, "exits", p.id))
		if len(kids) == 0 && len(dirs) == 0 && len(entries) == 0 && os.IsNotExist(exitErr) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: children %v, cgroups %v, state %v, exit record %v", kids, dirs, entries, exitErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// One shim serves several pods: each pod's Shutdown ends that pod alone,
// and the shim ends with its last pod; a shim that ended takes no pod.
func TestShimServesAGroup(t *testing.T) {
	a, b := newPod(t), newPod(t)
	ca := a.launch(t)
	b.shimDir = a.shimDir
	if err := os.MkdirAll(b.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := shim.AddPod(ctx(t), a.shimDir, b.id, b.dir); err != nil {
		t.Fatal(err)
	}
	b.watchShim(t)
	cb, err := shim.Connect(ctx(t), b.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	for _, p := range []*pod{a, b} {
		if target, err := os.Readlink(filepath.Join(p.dir, shim.ShimLink)); err != nil || target != a.shimDir {
			t.Errorf("%s links to %q (%v), want the shim's directory %s", p.id, target, err, a.shimDir)
		}
	}
	pidA, err := ca.StartSandbox(ctx(t), sandboxSpec(t, a.config()))
	if err != nil {
		t.Fatal(err)
	}
	pidB, err := cb.StartSandbox(ctx(t), sandboxSpec(t, b.config()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.State(ctx(t), a.id); !errdefs.IsNotFound(err) {
		t.Errorf("pod A's sandbox asked through pod B's socket: got %v, want NotFound", err)
	}

	if err := ca.Shutdown(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if alive(pidA) {
		t.Error("pod A's init runs after its Shutdown")
	}
	if a.shimExited(200*time.Millisecond) || !alive(pidB) {
		t.Fatal("pod A's Shutdown ended the shim or pod B")
	}
	if st, err := cb.State(ctx(t), b.id); err != nil || st.Status != shim.StatusRunning {
		t.Errorf("pod B after pod A's Shutdown: %+v, %v; want running", st, err)
	}
	if _, err := shim.Connect(ctx(t), a.dir, nil); !errdefs.IsNotFound(err) {
		t.Errorf("connect to pod A after its Shutdown: got %v, want NotFound", err)
	}

	if err := cb.Shutdown(ctx(t)); err != nil {
		t.Fatal(err)
	}
	checkShutdown(t, b)
	if err := shim.AddPod(ctx(t), a.shimDir, a.id, a.dir); !errdefs.IsUnavailable(err) {
		t.Errorf("AddPod to a shim that ended: got %v, want Unavailable", err)
	}
}

// joinNetNS has the sandbox join the network namespace at path.
func joinNetNS(path string) func(*specs.Spec) {
	return func(s *specs.Spec) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: path})
	}
}

// bindSource bind-mounts src on dst instead.
func bindSource(dst, src string) func(*specs.Spec) {
	return func(s *specs.Spec) {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == dst {
				s.Mounts[i] = specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind"}}
			}
		}
	}
}
