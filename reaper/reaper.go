// Package reaper is the PID 1 logic of ketch-init, the tiny static binary
// that is PID 1 of every pod sandbox (pause mode) and, for containers that
// opt in, PID 1 of the container in front of its entrypoint (init mode).
//
// Both modes share one event loop: the kernel reparents every orphan of a PID
// namespace to its PID 1 (or, outside that role, to the nearest
// PR_SET_CHILD_SUBREAPER ancestor), and nobody else will ever wait for them,
// so the loop collects every exited child the moment SIGCHLD arrives.
//
// The package must stay light: ketch-init is built with CGO_ENABLED=0 and is
// bind-mounted read-only into sandboxes and containers, and a copy runs in
// every pod. It imports only the standard library and golang.org/x/sys/unix.
package reaper

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options tune both modes. The zero value is ready to use.
type Options struct {
	// Stderr receives ketch-init's own one-line warnings and errors;
	// nil means os.Stderr.
	Stderr io.Writer
	// KillGrace (init mode only) is how long the leftovers of the
	// entrypoint's process group get to handle TERM before they are
	// KILLed; zero means DefaultKillGrace.
	KillGrace time.Duration
	// Counts, if not nil, is where the Counts are written each time they
	// change (the shim hands ketch-init this file; ketchd reads it for
	// its metrics).
	Counts *os.File
}

func (o Options) stderr() io.Writer {
	if o.Stderr == nil {
		return os.Stderr
	}
	return o.Stderr
}

// events is the loop both modes run on.
type events struct {
	// children has room for one SIGCHLD only: the kernel coalesces SIGCHLD,
	// so one pending notification stands for any number of exits, and a
	// reap pass after reading it collects all of them. A second one being
	// dropped by os/signal while the first is pending loses nothing.
	children chan os.Signal
	// signals carries the signals the mode acts on (exit in pause mode,
	// forward in init mode). Kept apart from children so a burst of them can
	// never crowd out a SIGCHLD.
	signals chan os.Signal

	counts Counts
	out    *os.File // where counts are published; nil: nowhere
}

// listen subscribes to SIGCHLD and sigs, and makes this process the reaper of
// its descendants' orphans. It must run before anything that could create a
// child or receive a signal: until signal.Notify is called, the Go runtime
// treats TERM and INT as fatal, and a SIGCHLD is dropped.
func listen(opts Options, sigs ...os.Signal) (*events, error) {
	ev := &events{
		children: make(chan os.Signal, 1),
		signals:  make(chan os.Signal, 16),
		out:      opts.Counts,
	}
	if opts.Counts != nil {
		// The children must not inherit it.
		unix.CloseOnExec(int(opts.Counts.Fd()))
	}
	signal.Notify(ev.children, unix.SIGCHLD)
	signal.Notify(ev.signals, sigs...)
	if pid := os.Getpid(); pid != 1 {
		// Only PID 1 inherits the orphans of its namespace. Anywhere else,
		// orphans of our descendants would go to the namespace's PID 1 (or a
		// subreaper above us) unless we claim them.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			ev.stop()
			return nil, fmt.Errorf("become child subreaper: %w", err)
		}
		fmt.Fprintf(opts.stderr(), "ketch-init: warning: running as PID %d, not PID 1: reaping only its own descendants (child subreaper)\n", pid)
	}
	return ev, nil
}

func (ev *events) stop() {
	signal.Stop(ev.children)
	signal.Stop(ev.signals)
}

// reap is Reap that counts every child other than entrypoint (0: none) as
// an orphan reaped, and calls exited with the entrypoint's status.
func (ev *events) reap(entrypoint int, exited func(unix.WaitStatus)) error {
	before := ev.counts
	err := Reap(func(pid int, status unix.WaitStatus) {
		if pid == entrypoint && entrypoint > 0 {
			exited(status)
			return
		}
		ev.counts.Reaped++
	})
	if ev.counts != before {
		ev.counts.publish(ev.out)
	}
	return err
}

// forward sends sig to process group pgid. A group that is already gone
// (ESRCH) is no error: the next SIGCHLD tells the loop.
func (ev *events) forward(pgid int, sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok && unix.Kill(-pgid, s) == nil {
		ev.counts.Forwarded++
		ev.counts.publish(ev.out)
	}
}

// Reap waits, without blocking, for every child that has already exited,
// and calls exited (if not nil) with each one's PID and status. It returns
// when no exited child is left, so one call after each SIGCHLD is enough
// however many children exited together.
func Reap(exited func(pid int, status unix.WaitStatus)) error {
	for {
		var status unix.WaitStatus
		pid, err := unix.Wait4(-1, &status, unix.WNOHANG, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ECHILD:
			// No children at all: nothing left to wait for.
			return nil
		case err != nil:
			return fmt.Errorf("wait4: %w", err)
		case pid <= 0:
			// Children exist, but none has exited yet.
			return nil
		}
		if exited != nil {
			exited(pid, status)
		}
	}
}
