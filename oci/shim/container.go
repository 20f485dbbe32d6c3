package shim

import (
	"github.com/opencontainers/runc/libcontainer"
)

// container is one libcontainer container the shim started: the sandbox
// now, app containers later.
type container struct {
	id  string
	lc  *libcontainer.Container // libcontainer locks its own calls
	pid int                     // set before the reaper watches it; constant after

	// exited is closed once exit is set and recorded on disk; exit is
	// written once, before the close, and read only after it.
	exited chan struct{}
	exit   Exit
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

func (c *container) state() State {
	if c.stopped() {
		e := c.exit
		return State{ID: c.id, Status: StatusStopped, Pid: c.pid, Exit: &e}
	}
	return State{ID: c.id, Status: StatusRunning, Pid: c.pid}
}
