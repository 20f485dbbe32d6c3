package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"ketch.dev/ketch/oci/runc"
	"ketch.dev/ketch/oci/shim"
)

// container is one container the shim runs: the pod's sandbox, whose id
// is the pod id, or an app container. ketch-runc makes and starts it.
type container struct {
	id     string
	rootfs string
	pid    int // set before the reaper watches it; constant after
	// ownPIDNS: its init is the PID 1 of a namespace of its own, and takes
	// every process of it along when KILLed. cgroupfs: its cgroups are
	// plain directories (not a systemd unit's).
	ownPIDNS, cgroupfs bool

	// process and opts are what StartContainer runs an app container
	// with; both nil for the sandbox, which runs from the start.
	process *process
	opts    *shim.ContainerOptions

	mu        sync.Mutex
	spec      []byte   // an app container's runtime spec (JSON) until it has started; guarded by mu
	tried     bool     // a start ran ketch-runc, which may have left state and cgroups; guarded by mu
	resources settings // its cgroups' settings, as created and updated; guarded by mu
	// cgroups maps each controller to the container's cgroup (cgroup v2:
	// ""), as libcontainer made them at its start; guarded by mu.
	cgroups map[string]string
	// pidfd is the init's until its exit is recorded, -1 before and after:
	// a signal never reaches a PID the init's reaping freed for reuse.
	// Guarded by mu.
	pidfd     int
	startedAt time.Time     // zero until started; guarded by mu
	starting  chan struct{} // while StartContainer is under way; closed when it ends; guarded by mu
	deleting  bool          // DeleteContainer or Shutdown has begun: no start from now on; guarded by mu
	io        *containerIO  // an app container's stdio and log once started; guarded by mu

	// exited is closed once exit is set and recorded on disk; exit and
	// destroyed (its cgroups and state went at the exit) are written
	// once, before the close, and read only after it.
	exited    chan struct{}
	exit      shim.Exit
	destroyed bool
}

func newContainer(id string, spec *runSpec) *container {
	c := &container{id: id, rootfs: spec.Root.Path, pidfd: -1, exited: make(chan struct{}),
		cgroupfs: filepath.IsAbs(spec.Linux.CgroupsPath)}
	for _, ns := range spec.Linux.Namespaces {
		c.ownPIDNS = c.ownPIDNS || ns.Type == specs.PIDNamespace && ns.Path == ""
	}
	if r := spec.Linux.Resources; r != nil {
		c.resources = *r
	}
	return c
}

func (c *container) stopped() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

func (c *container) started() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startedAt, !c.startedAt.IsZero()
}

func (c *container) state() shim.State {
	at, started := c.started()
	st := shim.State{ID: c.id, Status: shim.StatusCreated, Pid: c.pid, StartedAt: at}
	switch {
	case c.stopped():
		e := c.exit
		st.Status, st.Exit = shim.StatusStopped, &e
	case started || c.process == nil: // the sandbox runs from the start
		st.Status = shim.StatusRunning
	}
	return st
}

// running: started (or the sandbox) and not yet exited.
func (c *container) running() bool {
	return c.state().Status == shim.StatusRunning
}

func (c *container) stdio() *containerIO {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.io
}

// ran records what ketch-runc's run of c's init answered. It runs while
// the reaper holds off, so pid is still the init's, if only as a zombie.
func (c *container) ran(r runc.Reply) error {
	fd, err := unix.PidfdOpen(r.Pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd of %d: %w", r.Pid, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cgroups, c.pidfd = r.CgroupPaths, fd
	return nil
}

// signal sends sig to c's init, unless its exit has been recorded or it
// has exited: runc.ErrNotRunning.
func (c *container) signal(sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pidfd < 0 {
		return runc.ErrNotRunning
	}
	err := unix.PidfdSendSignal(c.pidfd, sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return runc.ErrNotRunning
	}
	return err
}

// closePidfd lets c's pidfd go once its exit is recorded.
func (c *container) closePidfd() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
		c.pidfd = -1
	}
}

func (c *container) cgroupPaths() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cgroups
}

// settle waits until no start of c is under way, and returns with c.mu
// held, so that none can begin before the caller has looked; on ctx's end
// it returns its error, unlocked.
func (c *container) settle(ctx context.Context) error {
	c.mu.Lock()
	for c.starting != nil {
		starting := c.starting
		c.mu.Unlock()
		select {
		case <-starting:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
	}
	return nil
}
