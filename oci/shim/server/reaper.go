package server

import (
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"ketch.dev/ketch/oci/shim"
)

// reaper collects every child of the shim. As subreaper the shim inherits
// each container process ketch-runc starts (once it and runc's
// intermediate processes exit) and every orphan a pod leaves outside a
// private PID namespace; reaping them all with wait4(-1) is the only way
// none stays a zombie. But the shim waits for each ketch-runc it runs by
// PID, and a wait4(-1) meanwhile would steal its status. So every helper
// call holds forkMu for reading, and the reaper runs only while it holds
// it for writing: a process the helper started is not reaped before the
// helper has told its PID, even one that exited at once.
type reaper struct {
	// forkMu is held shared by helper calls, exclusively while wait4(-1)
	// runs.
	forkMu sync.RWMutex

	mu sync.Mutex
	// watched maps a PID to the function told its exit. Guarded by mu.
	watched map[int]func(shim.Exit)

	kick chan struct{}
}

func newReaper() *reaper {
	return &reaper{watched: map[int]func(shim.Exit){}, kick: make(chan struct{}, 1)}
}

// run reaps on every SIGCHLD until stop is closed.
func (r *reaper) run(stop <-chan struct{}) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	defer signal.Stop(sigs)
	for {
		r.reap()
		select {
		case <-sigs:
		case <-r.kick:
		case <-stop:
			return
		}
	}
}

// reap collects every exited child. The watchers run after forkMu is
// released: they write to disk, and starts should not wait on that.
func (r *reaper) reap() {
	type exited struct {
		fn   func(shim.Exit)
		exit shim.Exit
	}
	var told []exited
	r.forkMu.Lock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			break
		}
		r.mu.Lock()
		fn := r.watched[pid]
		delete(r.watched, pid)
		r.mu.Unlock()
		if fn == nil {
			slog.Debug("reaped orphan", "pid", pid, "status", int(ws))
			continue
		}
		told = append(told, exited{fn, exitFromWaitStatus(syscall.WaitStatus(ws), time.Now())})
	}
	r.forkMu.Unlock()
	for _, t := range told {
		t.fn(t.exit)
	}
}

// start runs fork, which starts a process through ketch-runc and returns
// its PID, and tells onExit how that process ends. The PID is watched
// before the reaper can run again, so even an init that dies at once is
// not reaped unseen.
func (r *reaper) start(fork func() (int, error), onExit func(shim.Exit)) (int, error) {
	r.forkMu.RLock()
	pid, err := fork()
	if err == nil {
		r.mu.Lock()
		r.watched[pid] = onExit
		r.mu.Unlock()
	}
	r.forkMu.RUnlock()
	// Children that died during fork sent SIGCHLD while the reaper could
	// not act on it; signal.Notify may have merged those signals.
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return pid, err
}

// hold keeps the reaper from reaping while f runs: f may run ketch-runc,
// or signal a PID it knows is alive without the PID being reaped and
// reused meanwhile.
func (r *reaper) hold(f func() error) error {
	r.forkMu.RLock()
	defer r.forkMu.RUnlock()
	return f()
}
