package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"ketch.dev/ketch/oci/runc"
	"ketch.dev/ketch/oci/shim"
)

// drainTimeout bounds how long an exit waits for the container's output
// to reach its log: a background child left in a shared PID namespace
// keeps the pipes open for as long as it lives (node-facts.md).
const drainTimeout = 2 * time.Second

// createdSpecFile holds a created container's spec in its libcontainer
// state directory until ketch-runc's run replaces the directory.
const createdSpecFile = "spec.json"

// CreateContainer sets app container id up from spec, whose root is
// mounted. As with containerd, nothing is made and nothing runs until
// StartContainer: ketch-runc then checks the spec, makes the container
// and looks the user's program up. A failure leaves nothing.
func (s *Service) CreateContainer(_ context.Context, id string, specJSON []byte, o shim.ContainerOptions) error {
	spec, err := decodeSpec(specJSON)
	switch {
	case err != nil:
		return fmt.Errorf("create container %s: %w", id, err)
	case !shim.ValidID(id) || id == s.id:
		return fmt.Errorf("create container: id %q: %w", id, errdefs.ErrInvalidArgument)
	case spec.Process == nil || len(spec.Process.Args) == 0 || spec.Root == nil || spec.Linux == nil:
		return fmt.Errorf("create container %s: spec needs process args, root and linux: %w", id, errdefs.ErrInvalidArgument)
	}
	if err := s.reserve(id); err != nil {
		return fmt.Errorf("create container %s: %w", id, err)
	}
	defer s.unreserve(id)
	// On disk too, though the start takes it from memory: what a created
	// container's spec names (an init-mode ketch-init in an older sandbox
	// rootfs) must be found in use by ketchd's collection.
	if err := os.MkdirAll(filepath.Join(s.runc.Root, id), 0o711); err != nil {
		return fmt.Errorf("create container %s: %w", id, err)
	}
	if err := os.WriteFile(filepath.Join(s.runc.Root, id, createdSpecFile), specJSON, 0o600); err != nil {
		os.RemoveAll(filepath.Join(s.runc.Root, id))
		return fmt.Errorf("create container %s: %w", id, err)
	}
	c := newContainer(id, spec)
	c.spec, c.process, c.opts = specJSON, spec.Process, &o
	s.mu.Lock()
	s.containers[id] = c
	s.mu.Unlock()
	return nil
}

// reserve claims id for a create (or the sandbox's start) under way,
// refusing a second one and any once Shutdown has begun; unreserve
// releases the claim.
func (s *Service) reserve(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return fmt.Errorf("shim is shutting down: %w", errdefs.ErrFailedPrecondition)
	case s.containers[id] != nil || s.creating[id]:
		return fmt.Errorf("container %s: %w", id, errdefs.ErrAlreadyExists)
	}
	s.creating[id] = true
	s.starts.Add(1)
	return nil
}

func (s *Service) unreserve(id string) {
	s.mu.Lock()
	delete(s.creating, id)
	s.mu.Unlock()
	s.starts.Done()
}

// StartContainer starts a created container's program with its stdio
// wired to its CRI log. A program that cannot be started (not found, not
// executable) is an error naming it, and the container stays created.
//
// A container already started, or being started, answers with that start:
// ketchd asks again only when it died during a start the shim went on
// with, and its record must then say running, not that the start failed.
func (s *Service) StartContainer(ctx context.Context, id string) (shim.Started, error) {
	c, err := s.get(id)
	if err != nil {
		return shim.Started{}, err
	}
	if c.process == nil {
		return shim.Started{}, fmt.Errorf("start %s: the sandbox starts with the pod: %w", id, errdefs.ErrInvalidArgument)
	}
	if err := c.settle(ctx); err != nil {
		return shim.Started{}, fmt.Errorf("start %s: %w", id, err)
	}
	if c.deleting {
		c.mu.Unlock()
		return shim.Started{}, fmt.Errorf("start %s: being removed: %w", id, errdefs.ErrFailedPrecondition)
	}
	if !c.startedAt.IsZero() {
		st := shim.Started{At: c.startedAt, Pid: c.pid}
		c.mu.Unlock()
		return st, nil
	}
	done := make(chan struct{})
	c.starting = done
	c.mu.Unlock()
	at, err := s.start(c)
	c.mu.Lock()
	c.starting = nil
	c.mu.Unlock()
	close(done)
	if err != nil {
		return shim.Started{}, fmt.Errorf("start container %s: %w", id, err)
	}
	s.log.Info("started", "id", id, "pid", c.pid)
	return shim.Started{At: at, Pid: c.pid}, nil
}

func (s *Service) start(c *container) (time.Time, error) {
	proc := processFromSpec(c.process)
	if c.opts.Init {
		counts, args, err := s.withCounts(c.id, proc.Args)
		if err != nil {
			return time.Time{}, err
		}
		defer counts.Close()
		proc.Args, proc.ExtraFiles, proc.WaitChild = args, []*os.File{counts}, true
	}
	cio, err := newContainerIO(*c.opts, proc, c.process.Terminal)
	if err != nil {
		return time.Time{}, err
	}
	c.mu.Lock()
	c.tried = true
	spec := c.spec
	c.mu.Unlock()
	_, err = s.reaper.start(func() (int, error) {
		r, err := s.runc.Run(c.id, spec, proc)
		if err == nil {
			c.pid, err = r.Pid, c.ran(r)
		}
		return c.pid, err
	}, func(e shim.Exit) { go s.exitedApp(c, cio, e) })
	cio.closeChildEnds()
	if err == nil {
		err = cio.startTTY()
	}
	if err != nil {
		cio.close()
		return time.Time{}, startError(err)
	}
	at := time.Now()
	c.mu.Lock()
	c.io, c.startedAt, c.spec = cio, at, nil
	c.mu.Unlock()
	return at, nil
}

// startError says which kind of failure a start was: a program that is not
// there is the request's fault, as kubelet reports it (StartError).
func startError(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "executable file not found") || strings.Contains(msg, "no such file or directory") {
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	}
	if strings.Contains(msg, "permission denied") {
		return fmt.Errorf("%w: %w", errdefs.ErrPermissionDenied, err)
	}
	return err
}

func processFromSpec(p *process) *runc.Process {
	lp := &runc.Process{
		Args: p.Args,
		Env:  p.Env,
		Cwd:  p.Cwd,
		UID:  int(p.User.UID),
		GID:  int(p.User.GID),
		Init: true,
	}
	for _, g := range p.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, int(g))
	}
	return lp
}

// exitedApp records an app container's exit once its output has reached
// the log (bounded: see drainTimeout) and what the container held is let
// go, and says whether it was an OOM kill.
// It runs on its own goroutine, so that the drain never holds the reaper.
// cio is handed over rather than read from c: a program that exits at once
// can be reaped before start has recorded its stdio in c.
func (s *Service) exitedApp(c *container, cio *containerIO, e shim.Exit) {
	cio.drain(drainTimeout)
	if cio.result != nil {
		e.Result, e.Truncated = cio.result.buf, cio.result.truncated
	}
	e.OOMKilled = shim.OOMKills(c.cgroupPaths()) > 0
	if err := unmountRootfs(c); err != nil {
		s.log.Warn("unmount the rootfs of an exited container", "id", c.id, "err", err)
	}
	// As containerd does when it handles an exit: the cgroups and
	// libcontainer state go now, with any process a shared PID namespace
	// kept, so that an exited container holds nothing and RemoveContainer
	// does not wait for them (1.4-1.8 ms of its 4.7 here).
	// DeleteContainer's destroy then has nothing to do.
	err := s.release(context.Background(), c)
	if err != nil {
		s.log.Warn("destroy an exited container", "id", c.id, "err", err)
	}
	c.destroyed = err == nil
	s.exited(c, e)
}

// unmountRootfs unmounts exited container c's rootfs, which ketchd
// mounted and nothing reads any more; its writable layer stays until
// ketchd releases it. A workflow node keeps thousands of exited
// containers, and their mounts went into the table every new mount
// namespace copies and libcontainer reads more than once a container
// start: at 12,000 mounts one read of /proc/self/mountinfo cost 55 ms of
// CPU. containerd's shim and CRI-O unmount at the exit too.
func unmountRootfs(c *container) error {
	// MNT_DETACH: a process of the container's that a shared PID
	// namespace keeps alive still has its own copy of the mount.
	err := unix.Unmount(c.rootfs, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// DeleteContainer kills container id if it runs, waits for its exit to be
// recorded, and removes its cgroup and libcontainer state. A container
// that is not there is no error.
func (s *Service) DeleteContainer(ctx context.Context, id string) error {
	if id == s.id {
		return fmt.Errorf("delete %s: the sandbox goes with Shutdown: %w", id, errdefs.ErrInvalidArgument)
	}
	c, err := s.get(id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.destroy(ctx, c)
}

// ReopenLog reopens a running container's log file at its path.
func (s *Service) ReopenLog(_ context.Context, id string) error {
	c, err := s.get(id)
	if err != nil {
		return err
	}
	cio := c.stdio()
	if cio == nil || !c.running() {
		return fmt.Errorf("reopen log of %s: not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	return cio.log.reopen()
}
