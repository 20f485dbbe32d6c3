package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
)

// The transitions of a container's and a pod's life. Each checks the
// record's state inside its transaction and moves it only from the states
// it allows: from any other it is refused (ErrFailedPrecondition), and
// where it already happened it changes nothing and says so (changed
// false), so the callers that race to record one fact (StopContainer and
// the exit watcher) write it once. Each is the one place that publishes
// the matching Change, after its commit and in commit order.
//
//	container: creating ─Created→ created ─Started→ running ─Exited→ exited
//	           created ─Exited→ exited (it could not start, or its shim died)
//	           any ─Removing→ (marked for a restart to finish) ─Delete→ gone
//	pod:       creating ─Ready→ ready ─NotReady→ notready ─Delete→ gone

// ChangeKind is what happened to a pod or container, as kubelet's
// container events name it.
type ChangeKind int

const (
	Created ChangeKind = iota + 1
	Started
	Stopped
	Deleted
)

// Change is a committed transition. ID is the pod's own ID for a pod's
// changes; Pod is the last record of a deleted pod, whose status can no
// longer be read.
type Change struct {
	PodID, ID string
	Kind      ChangeKind
	Pod       *Sandbox
}

// Notify makes fn receive every Change from now on. fn runs while the
// store holds its write lock, which keeps changes in commit order: it may
// read the store, never write it.
func (s *Store) Notify(fn func(Change)) {
	s.write.Lock()
	defer s.write.Unlock()
	s.notify = fn
}

// publish hands c to the Notify function; the caller holds write.
func (s *Store) publish(c Change) {
	if s.notify != nil {
		s.notify(c)
	}
}

// errNoChange ends a transition that has already happened, without a write.
var errNoChange = errors.New("no change")

// Exit is how a container ended.
type Exit struct {
	Code            int32
	At              time.Time
	Reason, Message string
	// Result and Truncated are kept only by a container that wants its
	// stdout as its result.
	Result    []byte
	Truncated bool
}

// ContainerCreated: creating → created, with the identity its process runs
// as, its runtime spec and the spec's cgroupsPath.
func (s *Store) ContainerCreated(id string, u User, spec json.RawMessage, cgroupsPath string) error {
	_, _, err := s.containerTransition(id, Created, func(c *Container) error {
		if c.State != ContainerCreating {
			return refused(c.ID, c.State, "created")
		}
		c.State, c.User, c.Spec, c.CgroupsPath = ContainerCreated, &u, spec, cgroupsPath
		return nil
	})
	return err
}

// ContainerStarted: created → running, with its PID and start time. A
// running container is left as it is.
func (s *Store) ContainerStarted(id string, pid int, at time.Time) (bool, error) {
	_, changed, err := s.containerTransition(id, Started, func(c *Container) error {
		switch c.State {
		case ContainerRunning:
			return errNoChange
		case ContainerCreated:
			c.State, c.PID, c.StartedAt = ContainerRunning, pid, at
			return nil
		}
		return refused(c.ID, c.State, "started")
	})
	return changed, err
}

// ContainerExited: created or running → exited. An exited container keeps
// its first exit. It returns the record as it is now.
func (s *Store) ContainerExited(id string, e Exit) (Container, bool, error) {
	return s.containerTransition(id, Stopped, func(c *Container) error {
		switch c.State {
		case ContainerExited:
			return errNoChange
		case ContainerCreated, ContainerRunning:
			c.State, c.ExitCode, c.FinishedAt, c.Reason, c.Message = ContainerExited, e.Code, e.At, e.Reason, e.Message
			if c.WantResult {
				c.Result, c.ResultTruncated = e.Result, e.Truncated
			}
			return nil
		}
		return refused(c.ID, c.State, "exited")
	})
}

// ContainerRemoving marks a container in any state for removal, so that a
// restart finishes it, and returns the record.
func (s *Store) ContainerRemoving(id string) (Container, error) {
	c, _, err := s.containerTransition(id, 0, func(c *Container) error {
		if c.Removing {
			return errNoChange
		}
		c.Removing = true
		return nil
	})
	return c, err
}

// SandboxReady: creating → ready, with what running the pod gave it.
func (s *Store) SandboxReady(id string, pid int, netns string, ips []string) error {
	s.write.Lock()
	defer s.write.Unlock()
	sb, err := update(s.db, sandboxes, id, func(sb *Sandbox) error {
		if sb.State != SandboxCreating {
			return refused(sb.ID, sb.State, "ready")
		}
		sb.State, sb.PID, sb.NetNSPath, sb.IPs = SandboxReady, pid, netns, ips
		return nil
	})
	if err == nil {
		s.cachePod(sb)
		s.publish(Change{PodID: id, ID: id, Kind: Created})
		s.publish(Change{PodID: id, ID: id, Kind: Started})
	}
	return err
}

// SandboxNotReady makes a pod NOTREADY and reports whether it was READY:
// its PID 1 died, or a stop or remove began, before which no container
// may be created in it. With removing the record is also marked for a
// restart to finish the removal, and a pod still "creating" keeps that
// state.
func (s *Store) SandboxNotReady(id string, removing bool) (bool, error) {
	s.write.Lock()
	defer s.write.Unlock()
	wasReady := false
	sb, err := update(s.db, sandboxes, id, func(sb *Sandbox) error {
		wasReady = sb.State == SandboxReady
		if !wasReady && (sb.Removing || !removing) && sb.State != SandboxCreating {
			return errNoChange
		}
		if !removing || sb.State != SandboxCreating {
			sb.State = SandboxNotReady
		}
		sb.Removing = sb.Removing || removing
		return nil
	})
	if errors.Is(err, errNoChange) {
		return false, nil
	}
	if err == nil {
		s.cachePod(sb)
	}
	if err == nil && wasReady {
		s.publish(Change{PodID: id, ID: id, Kind: Stopped})
	}
	return wasReady && err == nil, err
}

// containerTransition runs fn on container id's record in one transaction
// and, if fn changed it, caches it and publishes kind (none when 0).
func (s *Store) containerTransition(id string, kind ChangeKind, fn func(*Container) error) (Container, bool, error) {
	s.write.Lock()
	defer s.write.Unlock()
	c, err := update(s.db, containers, id, fn)
	if errors.Is(err, errNoChange) {
		return c, false, nil
	}
	if err != nil {
		return c, false, err
	}
	s.cache(c)
	if kind != 0 {
		s.publish(Change{PodID: c.SandboxID, ID: c.ID, Kind: kind})
	}
	return c, true, nil
}

func refused[S ~string](id string, from S, to string) error {
	return fmt.Errorf("%s is %s and cannot become %s: %w", id, from, to, errdefs.ErrFailedPrecondition)
}
