package reaper

import (
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		status unix.WaitStatus // as wait4 encodes it
		want   int
	}{
		{"exit 0", 0, 0},
		{"exit 3", 3 << 8, 3},
		{"exit 255", 255 << 8, 255},
		{"killed by TERM", unix.WaitStatus(unix.SIGTERM), 143},
		{"killed by KILL", unix.WaitStatus(unix.SIGKILL), 137},
		{"killed by SEGV, core dumped", unix.WaitStatus(unix.SIGSEGV) | 0x80, 139},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := ExitCode(tc.status); got != tc.want {
				t.Errorf("ExitCode(%#x) = %d, want %d", uint32(tc.status), got, tc.want)
			}
		})
	}
}

// forkSh starts sh -c script as a child of the test process that only Reap
// will wait for, and returns its PID.
func forkSh(t *testing.T, script string, files ...uintptr) int {
	t.Helper()
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", script}, &syscall.ProcAttr{
		Files: append([]uintptr{0, 1, 2}, files...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil) // ECHILD once Reap has it
	})
	return pid
}

// isZombie reports whether pid has exited and waits to be reaped.
func isZombie(pid int) bool {
	var si unix.Siginfo
	// WNOWAIT leaves the child waitable: only Reap may collect it.
	err := unix.Waitid(unix.P_PID, pid, &si, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err == nil && si.Signo == int32(unix.SIGCHLD)
}

// Reap runs in the test process, whose only children are the ones these
// tests fork: wait4(-1) takes whatever child has exited.
func TestReap(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	want := map[int]int{
		forkSh(t, "exit 0"):      0,
		forkSh(t, "exit 3"):      3,
		forkSh(t, "kill -9 $$"):  137,
		forkSh(t, "kill -15 $$"): 143,
	}
	// Still running while Reap runs: Reap must not wait for it.
	running := forkSh(t, "read x <&3; exit 5", r.Fd())
	r.Close()
	deadline := time.Now().Add(5 * time.Second)
	for pid := range want {
		for !isZombie(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("child %d has not exited", pid)
			}
			time.Sleep(time.Millisecond)
		}
	}

	got := map[int]int{}
	collect := func(pid int, status unix.WaitStatus) { got[pid] = ExitCode(status) }
	if err := Reap(collect); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("Reap collected %v, want %v", got, want)
	}
	for pid, code := range want {
		if got[pid] != code {
			t.Errorf("child %d: code %d, want %d", pid, got[pid], code)
		}
	}
	if _, ok := got[running]; ok {
		t.Errorf("Reap reported child %d, which was still running", running)
	}

	w.Close()
	for !isZombie(running) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d has not exited", running)
		}
		time.Sleep(time.Millisecond)
	}
	clear(got)
	if err := Reap(collect); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[running] != 5 {
		t.Errorf("second Reap collected %v, want %d: 5", got, running)
	}

	// No children at all (ECHILD) is no error.
	if err := Reap(nil); err != nil {
		t.Errorf("Reap without children: %v", err)
	}
}
