package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Init mode: ketch-init as a workflow container's PID 1 in front of its
// entrypoint (design: "Workflow pods").

func TestInitExitCode(t *testing.T) {
	needRoot(t)
	notExecutable := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc string
		pid1 bool
		args []string
		want int
	}{
		{"exit code", true, []string{"--", "sh", "-c", "exit 3"}, 3},
		{"without --", true, []string{"sh", "-c", "exit 4"}, 4},
		{"killed by USR1 is 128+10", true, []string{"--", "sh", "-c", "kill -USR1 $$"}, 138},
		{"not found", true, []string{"--", "/nonexistent/entrypoint"}, 127},
		{"not in PATH", true, []string{"--", "no-such-entrypoint"}, 127},
		{"not executable", true, []string{"--", notExecutable}, 126},
		{"not PID 1", false, []string{"--", "sh", "-c", "exit 5"}, 5},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := start(t, startOpts{pid1: tc.pid1, args: tc.args})
			if code := in.wait(t, 5*time.Second); code != tc.want {
				t.Errorf("exit code %d, want %d", code, tc.want)
			}
		})
	}
}

// Every forwarded signal reaches the entrypoint; its trap decides the exit
// code, so the code proves which signal arrived.
func TestInitForwardsSignals(t *testing.T) {
	needRoot(t)
	for i, sig := range []syscall.Signal{
		syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
	} {
		t.Run(sig.String(), func(t *testing.T) {
			code := 40 + i
			// The inner sh leaves its sleep to ketch-init at once, so the
			// sleep is an orphan whichever signal ends it; a sleep of the
			// entrypoint's own could be reaped by the entrypoint instead.
			script := fmt.Sprintf(`trap "exit %d" %d; sh -c 'sleep 100 &'; echo ready; while :; do sleep 0.05; done`, code, sig)
			counts := countsFile(t)
			in := start(t, startOpts{pid1: true, args: []string{"--counts-fd=3", "--", "sh", "-c", script}, files: []*os.File{counts}})
			readLine(t, in.stdout)
			if err := syscall.Kill(in.pid, sig); err != nil {
				t.Fatal(err)
			}
			if got := in.wait(t, 5*time.Second); got != code {
				t.Errorf("exit code %d, want %d (the trap of %v)", got, code, sig)
			}
			// The orphaned sleep is ended (by the signal or by the TERM
			// to the group's leftovers) and reaped by ketch-init.
			if c := readCounts(t, counts); c.Forwarded != 1 || c.Reaped != 1 {
				t.Errorf("counts %+v, want 1 signal forwarded and 1 orphan reaped", c)
			}
		})
	}
}

// The seed article's failure: `sh -c program` as PID 1 never passed TERM on.
// Sent to the process group, it reaches the program under the shell, which
// exits 9 from its trap; the shell's own trap only notes it and keeps waiting.
func TestInitTermReachesProgramUnderShell(t *testing.T) {
	needRoot(t)
	program := `trap "exit 9" TERM; echo ready; sleep 100 & wait`
	shell := fmt.Sprintf(`trap "echo shell got TERM" TERM; sh -c '%s'; exit $?`, program)
	in := start(t, startOpts{pid1: true, args: []string{"--", "sh", "-c", shell}})
	readLine(t, in.stdout)
	if err := syscall.Kill(in.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := in.wait(t, 5*time.Second); code != 9 {
		t.Errorf("exit code %d, want the program's 9", code)
	}
}

// When the entrypoint exits, what it left in its process group must not
// keep the step alive: TERM, then KILL after --kill-grace.
func TestInitEndsLeftovers(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		desc   string
		script string // prints the leftover's PID, then exits 0
		grace  time.Duration
		// From reading the leftover's PID to ketch-init's exit: the
		// entrypoint may have exited a moment before, so a grace is seen
		// from its half on (KILL at once would be ~0).
		min, max time.Duration
	}{
		{"leftover that obeys TERM", `sleep 100 & echo $!`, 5 * time.Second, 0, time.Second},
		{"leftover that ignores TERM", `trap "" TERM; sleep 100 & echo $!`, 300 * time.Millisecond, 150 * time.Millisecond, 2 * time.Second},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			// Not PID 1, so the printed PID is the host's.
			in := start(t, startOpts{args: []string{"--kill-grace", tc.grace.String(), "--", "sh", "-c", tc.script}})
			leftover, err := strconv.Atoi(readLine(t, in.stdout))
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			if code := in.wait(t, 5*time.Second); code != 0 {
				t.Errorf("exit code %d, want the entrypoint's 0", code)
			}
			took := time.Since(t0)
			t.Logf("ketch-init exited %v after its entrypoint", took.Round(time.Millisecond))
			if took < tc.min || took > tc.max {
				t.Errorf("took %v, want between %v and %v", took, tc.min, tc.max)
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", leftover)); err == nil {
				t.Errorf("leftover %d outlived ketch-init", leftover)
			}
		})
	}
}
