package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ketch.dev/ketch/reaper"
)

// These tests run the real binary, built the way it ships, against the
// kernel: new PID namespaces, real orphans, real signals.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ketch-init-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "ketch-init")
	// Whatever a ketch-init under test leaves behind when it dies (init
	// mode's leftovers, a subreaper's orphans) comes to the test process
	// instead of the host's init, so each test's cleanup can kill it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "become child subreaper:", err)
		os.Exit(1)
	}
	// The shipping build: static, so it runs from a bare read-only rootfs.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build ketch-init:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates PID namespaces and joins them with nsenter")
	}
}

// instance is one running ketch-init.
type instance struct {
	cmd    *exec.Cmd
	pid    int
	stdout *bufio.Reader
	stderr *bufio.Reader
	exited chan struct{} // closed once cmd.Wait has returned
	err    error         // cmd.Wait's result, valid after exited
}

type startOpts struct {
	pid1  bool       // PID 1 of a new PID namespace
	shell string     // run this shell script, which ends with `exec ketch-init`
	args  []string   // ketch-init's arguments
	files []*os.File // become fds 3, 4, ...
}

// start runs ketch-init and makes sure that it, and every descendant it
// has by the end of the test, is killed and waited for.
func start(t *testing.T, o startOpts) *instance {
	t.Helper()
	cmd := exec.Command(binary, o.args...)
	if o.shell != "" {
		cmd = exec.Command("/bin/sh", append([]string{"-c", o.shell, "sh"}, o.args...)...)
		cmd.Env = append(os.Environ(), "KETCH_INIT="+binary)
	}
	cmd.ExtraFiles = o.files
	if o.pid1 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	}
	// Our own pipes rather than StdoutPipe/StderrPipe, which Wait closes:
	// the test may read what ketch-init wrote after it has exited.
	stdout, stdoutW := pipe(t)
	stderr, stderrW := pipe(t)
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ketch-init: %v", err)
	}
	stdoutW.Close()
	stderrW.Close()
	in := &instance{
		cmd: cmd, pid: cmd.Process.Pid,
		stdout: bufio.NewReader(stdout), stderr: bufio.NewReader(stderr),
		exited: make(chan struct{}),
	}
	go func() {
		// Waited for here so that a test can wait with a timeout.
		in.err = cmd.Wait()
		close(in.exited)
	}()
	t.Cleanup(func() {
		killTree(in.pid)
		select {
		case <-in.exited:
		case <-time.After(5 * time.Second):
			t.Errorf("ketch-init %d not gone 5 s after SIGKILL", in.pid)
		}
		// Tests run one at a time, so any other child of the test process
		// was handed to it by this ketch-init.
		for _, c := range childrenOf(os.Getpid()) {
			killTree(c.pid)
			_, _ = unix.Wait4(c.pid, nil, 0, nil)
		}
	})
	return in
}

// wait returns ketch-init's exit code, failing the test after timeout.
func (in *instance) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-in.exited:
	case <-time.After(timeout):
		t.Fatalf("ketch-init %d still running %v later", in.pid, timeout)
	}
	var exit *exec.ExitError
	if in.err != nil && !errors.As(in.err, &exit) {
		t.Fatalf("wait: %v", in.err)
	}
	if ws := in.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("ketch-init killed by %v", ws.Signal())
	}
	return in.cmd.ProcessState.ExitCode()
}

// killTree SIGKILLs root and all its descendants, leaves first: orphans of
// killed descendants go to root (PID 1 or subreaper), so it must be last.
func killTree(root int) {
	for range 100 {
		var below []int
		frontier := []int{root}
		all := procs()
		for len(frontier) > 0 {
			p := frontier[0]
			frontier = frontier[1:]
			for _, c := range all {
				if c.ppid == p {
					below = append(below, c.pid)
					frontier = append(frontier, c.pid)
				}
			}
		}
		if len(below) == 0 {
			break
		}
		for i := len(below) - 1; i >= 0; i-- {
			_ = unix.Kill(below[i], unix.SIGKILL)
		}
		time.Sleep(time.Millisecond)
	}
	_ = unix.Kill(root, unix.SIGKILL)
}

type proc struct {
	pid, ppid int
	state     byte
}

// procs lists every process on the host, from its /proc/<pid>/stat.
func procs() []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited (and reaped) since ReadDir
		}
		// The command name may hold spaces and parentheses; the fields
		// after its last ')' are "state ppid ...".
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		ppid, _ := strconv.Atoi(f[1])
		out = append(out, proc{pid: pid, ppid: ppid, state: f[0][0]})
	}
	return out
}

// inNamespaceOf lists the processes, pid excepted, that share pid's PID
// namespace. Zombies keep their namespace link until they are reaped.
func inNamespaceOf(t *testing.T, pid int) []proc {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []proc
	for _, p := range procs() {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.pid)); l == ns && p.pid != pid {
			out = append(out, p)
		}
	}
	return out
}

func childrenOf(pid int) []proc {
	var out []proc
	for _, p := range procs() {
		if p.ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

func zombies(ps []proc) int {
	n := 0
	for _, p := range ps {
		if p.state == 'Z' {
			n++
		}
	}
	return n
}

// eventually polls cond every 2 ms until it holds or limit passes, and
// returns how long that took.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	for !cond() {
		if time.Since(t0) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(t0)
}

// nsSh runs script with sh as a member of pid's PID namespace. Its parent
// (nsenter) is outside that namespace, so whatever it leaves running is
// reparented to the namespace's PID 1.
func nsSh(t *testing.T, pid int, script string, files ...*os.File) {
	t.Helper()
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("nsenter (util-linux) not installed")
	}
	// Output goes to a file, not a pipe: orphans inherit it, and a pipe
	// would keep exec's copier waiting for an EOF they hold back.
	out, err := os.CreateTemp(t.TempDir(), "nsenter-")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("nsenter", "--target", strconv.Itoa(pid), "--pid", "--", "/bin/sh", "-c", script)
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("nsenter: %v: %s", err, b)
	}
}

// waitReaping returns once ketch-init, PID 1 of its namespace, has reaped a
// probe orphan. Its first reap pass follows signal.Notify, so from then on
// TERM and INT are handled rather than fatal.
func waitReaping(t *testing.T, in *instance) {
	t.Helper()
	nsSh(t, in.pid, `sh -c 'exit 0' &`)
	eventually(t, 5*time.Second, "probe orphan reaped", func() bool {
		return len(inNamespaceOf(t, in.pid)) == 0
	})
}

// readWarning reads ketch-init's first stderr line, written once it
// handles signals and is a child subreaper.
func (in *instance) readWarning(t *testing.T) string {
	t.Helper()
	return readLine(t, in.stderr)
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read from ketch-init: %v (got %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out); got != "ketch-init dev\n" {
		t.Errorf("--version printed %q", got)
	}
}

// The sandbox's job (issue 4): 100 orphans in the pod's PID namespace, and
// none of them left as a zombie 1 s after it exits.
func TestPauseReapsOrphansAsPID1(t *testing.T) {
	needRoot(t)
	const n = 100
	for _, tc := range []struct {
		desc string
		// gated orphans block on fd 3 until the test closes its write end,
		// so all n exit within microseconds of each other and their
		// SIGCHLDs coalesce; the others exit while still being created.
		gated bool
	}{
		{desc: "orphans exiting at once", gated: true},
		{desc: "orphans exiting as they are created"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			counts := countsFile(t)
			in := start(t, startOpts{pid1: true, args: []string{"--counts-fd=3"}, files: []*os.File{counts}})
			orphan := `sh -c 'exit 0'`
			var files []*os.File
			var gate *os.File
			if tc.gated {
				r, w := pipe(t)
				orphan, files, gate = `sh -c 'read x <&3'`, []*os.File{r}, w
			}
			nsSh(t, in.pid, fmt.Sprintf(`i=0; while [ $i -lt %d ]; do %s & i=$((i+1)); done`, n, orphan), files...)
			if tc.gated {
				files[0].Close()
				// nsenter has returned, so its shell has exited and every
				// orphan it left has been reparented.
				if got := len(childrenOf(in.pid)); got != n {
					t.Fatalf("ketch-init has %d children, want the %d orphans", got, n)
				}
				gate.Close()
			}
			var left []proc
			took := eventually(t, time.Second, "orphans reaped", func() bool {
				left = inNamespaceOf(t, in.pid)
				return len(left) == 0
			})
			t.Logf("%d orphans gone from the namespace %v after they were released", n, took.Round(time.Millisecond))
			if z := zombies(left); z != 0 {
				t.Errorf("%d zombies left", z)
			}
			// Gated, all n were orphans when they exited (and nsenter's
			// shell may be one too); otherwise the shell reaped those that
			// exited before it did.
			least := n
			if !tc.gated {
				least = 1
			}
			if c := readCounts(t, counts); c.Reaped < uint64(least) || c.Reaped > n+1 || c.Forwarded != 0 {
				t.Errorf("counts %+v, want %d to %d reaped and none forwarded", c, least, n+1)
			}
		})
	}
}

func TestPauseExitsZeroOnTermAndInt(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		desc string
		pid1 bool
		sig  syscall.Signal
	}{
		{"PID 1, TERM", true, syscall.SIGTERM},
		{"PID 1, INT", true, syscall.SIGINT},
		{"not PID 1, TERM", false, syscall.SIGTERM},
		{"not PID 1, INT", false, syscall.SIGINT},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := start(t, startOpts{pid1: tc.pid1})
			if tc.pid1 {
				waitReaping(t, in)
			} else {
				in.readWarning(t)
			}
			if err := unix.Kill(in.pid, tc.sig); err != nil {
				t.Fatal(err)
			}
			if code := in.wait(t, 2*time.Second); code != 0 {
				t.Errorf("exit code %d after %v, want 0", code, tc.sig)
			}
		})
	}
}

// Not PID 1 (a shared PID namespace, or someone running it by hand): it
// says so, reaps the children it inherited, and as a child subreaper also
// gets and reaps the orphans of those children.
func TestPauseNotPID1WarnsAndReaps(t *testing.T) {
	needRoot(t)
	const n = 50
	gate1r, gate1w := pipe(t)
	gate2r, gate2w := pipe(t)
	// Each child waits on fd 3, then leaves a grandchild waiting on fd 4
	// and exits; the shell then becomes ketch-init, inheriting the children.
	in := start(t, startOpts{
		shell: fmt.Sprintf(`i=0; while [ $i -lt %d ]; do ( read x <&3; sh -c 'read y <&4' & ) & i=$((i+1)); done; exec "$KETCH_INIT"`, n),
		files: []*os.File{gate1r, gate2r},
	})
	gate1r.Close()
	gate2r.Close()
	if w := in.readWarning(t); !strings.Contains(w, "not PID 1") {
		t.Errorf("first stderr line %q does not warn about not being PID 1", w)
	}
	inherited := map[int]bool{}
	for _, c := range childrenOf(in.pid) {
		inherited[c.pid] = true
	}
	if len(inherited) != n {
		t.Fatalf("ketch-init inherited %d children, want %d", len(inherited), n)
	}

	gate1w.Close()
	eventually(t, 5*time.Second, "children exited and grandchildren reparented to ketch-init", func() bool {
		cs := childrenOf(in.pid)
		for _, c := range cs {
			if inherited[c.pid] {
				return false
			}
		}
		return len(cs) == n && zombies(cs) == 0
	})

	gate2w.Close()
	var left []proc
	took := eventually(t, time.Second, "grandchildren reaped", func() bool {
		left = childrenOf(in.pid)
		return len(left) == 0
	})
	t.Logf("%d reparented grandchildren reaped %v after they were released", n, took.Round(time.Millisecond))
	if z := zombies(left); z != 0 {
		t.Errorf("%d zombies left", z)
	}
}

// The cost of one sandbox's ketch-init, for the closing note.
func TestPauseFootprint(t *testing.T) {
	needRoot(t)
	st, err := os.Stat(binary)
	if err != nil {
		t.Fatal(err)
	}
	in := start(t, startOpts{pid1: true})
	waitReaping(t, in)
	time.Sleep(500 * time.Millisecond)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", in.pid))
	if err != nil {
		t.Fatal(err)
	}
	var rss string
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rss = strings.TrimSpace(v)
		}
	}
	pss := "?"
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", in.pid)); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Pss:"); ok {
				pss = strings.TrimSpace(v)
			}
		}
	}
	t.Logf("binary %d bytes (%.2f MiB), idle VmRSS %s, Pss %s", st.Size(), float64(st.Size())/(1<<20), rss, pss)
	// Loose ceilings: they catch a heavy import, not noise.
	if st.Size() > 4<<20 {
		t.Errorf("binary is %d bytes; something heavy got imported into reaper", st.Size())
	}
	if kb, _ := strconv.Atoi(strings.TrimSuffix(rss, " kB")); kb == 0 || kb > 8<<10 {
		t.Errorf("idle VmRSS %q, want under 8 MiB", rss)
	}
}

// countsFile is a file for ketch-init's --counts-fd, as the shim makes one.
func countsFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "counts"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readCounts(t *testing.T, f *os.File) reaper.Counts {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	c, err := reaper.ParseCounts(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
