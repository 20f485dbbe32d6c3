package reaper

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Forwarded are the signals init mode passes on to the entrypoint's process
// group: the catchable ones a container runtime, kubelet or a terminal send.
var Forwarded = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH,
}

// DefaultKillGrace is how long init mode lets the leftovers of the
// entrypoint's process group handle TERM before it KILLs them. Short on
// purpose: they are orphans of a step that has already ended, and the
// container cannot report its exit until they are gone.
const DefaultKillGrace = 2 * time.Second

// Init is init mode: ketch-init as a container's PID 1 in front of the real
// entrypoint argv (argv[0] is looked up in PATH).
//
// It starts argv in a process group of its own (the foreground one when
// ketch-init owns the terminal), forwards every signal in Forwarded to that
// group, and reaps every child that exits. When the entrypoint exits it
// TERMs what is left of the group, KILLs it after Options.KillGrace, and
// returns the entrypoint's exit code, or 128+N if signal N killed it, as a
// shell would report it.
//
// When argv cannot be started, it returns 127 (not found) or 126 (found but
// not executable), as shells do, with the error; any other error comes with
// code 1.
func Init(argv []string, opts Options) (int, error) {
	if len(argv) == 0 {
		return 1, errors.New("init mode needs a command to run")
	}
	killGrace := opts.KillGrace
	if killGrace <= 0 {
		killGrace = DefaultKillGrace
	}
	ev, err := listen(opts, Forwarded...)
	if err != nil {
		return 1, err
	}
	defer ev.stop()
	pid, err := start(argv)
	if err != nil {
		return startFailureCode(err), err
	}
	status, err := ev.waitFor(pid)
	if err != nil {
		return 1, err
	}
	if err := ev.endGroup(pid, killGrace); err != nil {
		fmt.Fprintf(opts.stderr(), "ketch-init: warning: %v\n", err)
	}
	return ExitCode(status), nil
}

// ExitCode is the code a shell reports for a child that ended with status:
// its exit code, or 128+N when signal N killed it.
func ExitCode(status unix.WaitStatus) int {
	if status.Signaled() {
		return 128 + int(status.Signal())
	}
	return status.ExitStatus()
}

// start runs argv in a new process group whose ID is the returned PID, so
// that one kill(-pid) reaches the entrypoint and everything it spawns, and
// a shell entrypoint cannot swallow a TERM meant for the program it runs.
func start(argv []string) (int, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return 0, err
	}
	sys := &syscall.SysProcAttr{Setpgid: true}
	if ownsTerminal() {
		// Keyboard signals and terminal reads go to the foreground group
		// only; the entrypoint's group has to be it.
		sys.Foreground, sys.Ctty = true, 0
	}
	// syscall.ForkExec rather than os/exec: the PID is reaped by Reap's
	// wait4(-1), which os/exec's own Wait would race with.
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   sys,
	})
	if err != nil {
		return 0, fmt.Errorf("exec %s: %w", path, err)
	}
	return pid, nil
}

// ownsTerminal reports whether stdin is this process's controlling
// terminal and its process group is in the foreground there (a container
// with tty: true, where the runtime made ketch-init the session leader).
func ownsTerminal() bool {
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return err == nil && fg == unix.Getpgrp()
}

func startFailureCode(err error) int {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return 127
	}
	return 126
}

// waitFor forwards signals to pid's process group and reaps children until
// pid itself has exited, and returns its status.
func (ev *events) waitFor(pid int) (unix.WaitStatus, error) {
	var status unix.WaitStatus
	exited := false
	record := func(s unix.WaitStatus) { status, exited = s, true }
	for {
		// Reap before the first wait: the entrypoint may have exited
		// before ForkExec returned.
		if err := ev.reap(pid, record); err != nil {
			return 0, err
		}
		if exited {
			return status, nil
		}
		select {
		case <-ev.children:
		case sig := <-ev.signals:
			ev.forward(pid, sig)
		}
	}
}

// endGroup ends what is left of process group pgid once its leader has
// exited: TERM, then KILL after grace, reaping as members exit. It returns
// once the group is empty, or with an error if members outlive KILL by
// another grace (a process stuck in uninterruptible sleep: waiting longer
// would only keep the container from reporting its exit).
func (ev *events) endGroup(pgid int, grace time.Duration) error {
	if unix.Kill(-pgid, unix.SIGTERM) == unix.ESRCH {
		return nil
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	killed := false
	for {
		if err := ev.reap(0, nil); err != nil {
			return err
		}
		// Signal 0 only asks whether the group still has a member. Zombies
		// count as members, which is why our own were reaped just above.
		if unix.Kill(-pgid, 0) == unix.ESRCH {
			return nil
		}
		select {
		case <-ev.children:
		case sig := <-ev.signals:
			ev.forward(pgid, sig)
		case <-deadline.C:
			if killed {
				return fmt.Errorf("process group %d outlived SIGKILL by %v", pgid, grace)
			}
			_ = unix.Kill(-pgid, unix.SIGKILL)
			killed = true
			deadline.Reset(grace)
		}
	}
}
