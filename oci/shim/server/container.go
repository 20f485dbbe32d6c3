package server

import (
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runtime-spec/specs-go"
	"ketch.dev/ketch/oci/shim"
)

// container is one libcontainer container the shim runs: the pod's
// sandbox, whose id is the pod id, or an app container.
type container struct {
	id  string
	lc  *libcontainer.Container // libcontainer locks its own calls
	pid int                     // set before the reaper watches it; constant after

	// process and opts are what StartContainer runs an app container
	// with; both nil for the sandbox, which runs from the start.
	process *specs.Process
	opts    *shim.ContainerOptions

	mu        sync.Mutex
	startedAt time.Time     // zero until started; guarded by mu
	starting  chan struct{} // while StartContainer is under way; closed when it ends; guarded by mu
	io        *containerIO  // an app container's stdio and log once started; guarded by mu

	// exited is closed once exit is set and recorded on disk; exit is
	// written once, before the close, and read only after it.
	exited chan struct{}
	exit   shim.Exit
}

func newContainer(id string, lc *libcontainer.Container) *container {
	return &container{id: id, lc: lc, exited: make(chan struct{})}
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
