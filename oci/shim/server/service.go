package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/cgroups"
	"ketch.dev/ketch/oci/runc"
	"ketch.dev/ketch/oci/shim"
)

const (
	// stopTimeout bounds how long Shutdown waits for a KILLed init to be
	// reaped; only an init stuck in the kernel (D state) takes longer.
	stopTimeout = 10 * time.Second
)

// Service is the shim's logic, independent of the transport: it owns the
// pod's containers and their exit records; ketch-runc their libcontainer
// state.
type Service struct {
	id     string // the pod id, which is also the sandbox container's id
	dir    string
	reaper *reaper
	runc   runc.Helper  // makes, starts, signals and destroys the pod's containers
	log    *slog.Logger // names the pod

	mu sync.Mutex
	// containers by id; guarded by mu. The sandbox is containers[id].
	containers map[string]*container
	// creating holds the ids of StartSandbox and CreateContainer calls
	// under way, so that a second call fails at once; closing is set by
	// Shutdown and never cleared. Guarded by mu.
	creating map[string]bool
	closing  bool
	// starts counts those calls past the closing check; Shutdown waits
	// for them so that nothing is created behind its back.
	starts sync.WaitGroup
}

func newService(id, dir, runcBinary string, r *reaper) *Service {
	return &Service{id: id, dir: dir, reaper: r, runc: runc.Helper{Binary: runcBinary, Root: filepath.Join(dir, shim.StateDir)}, log: slog.With("pod", id), containers: map[string]*container{}, creating: map[string]bool{}}
}

func (s *Service) get(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

// State answers from memory: a container is running until the reaper has
// collected its init and recorded the exit.
func (s *Service) State(ctx context.Context, id string) (shim.State, error) {
	c, err := s.get(id)
	if err != nil {
		return shim.State{}, err
	}
	// A start under way is waited for: a ketchd that died during it asks
	// on its return whether the container started, and must not be told
	// "created" a moment before it runs.
	if err := c.settle(ctx); err != nil {
		return shim.State{}, err
	}
	c.mu.Unlock()
	return c.state(), nil
}

// Kill sends sig to the container's init, or with all to every process of
// its cgroup. A stopped container answers FailedPrecondition.
func (s *Service) Kill(_ context.Context, id string, sig syscall.Signal, all bool) error {
	c, err := s.get(id)
	if err != nil {
		return err
	}
	// Holding the reaper keeps the init from being reaped, and its PID
	// reused, between the check and the signal.
	err = s.reaper.hold(func() error {
		switch {
		case !c.running():
			return runc.ErrNotRunning
		case !all && sig != syscall.SIGKILL, sig == syscall.SIGKILL && c.ownPIDNS:
			return c.signal(sig)
		case sig == syscall.SIGKILL:
			return s.runc.Kill(id, sig) // the container whole: see runc.Helper.Kill
		}
		pids, err := cgroupPids(c.cgroupPaths())
		if err != nil {
			return err
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, sig); err != nil && err != syscall.ESRCH {
				return fmt.Errorf("signal %d: %w", pid, err)
			}
		}
		return nil
	})
	if errors.Is(err, runc.ErrNotRunning) {
		return fmt.Errorf("kill %s: not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return fmt.Errorf("kill %s with %v: %w", id, sig, err)
	}
	return nil
}

// Wait returns the container's exit once it is recorded on disk. A
// container that was never started has none to wait for.
func (s *Service) Wait(ctx context.Context, id string) (shim.Exit, error) {
	c, err := s.get(id)
	if err != nil {
		return shim.Exit{}, err
	}
	if c.state().Status == shim.StatusCreated {
		return shim.Exit{}, fmt.Errorf("wait for %s: not started: %w", id, errdefs.ErrFailedPrecondition)
	}
	select {
	case <-c.exited:
		return c.exit, nil
	case <-ctx.Done():
		return shim.Exit{}, fmt.Errorf("wait for %s: %w", id, ctx.Err())
	}
}

// exited is the reaper's report that c's init has ended: the record goes to
// disk first, so that no caller learns of an exit a crash could lose.
func (s *Service) exited(c *container, e shim.Exit) {
	if err := recordExit(s.dir, c.id, e); err != nil {
		s.log.Error("exit not recorded", "id", c.id, "err", err)
	}
	c.exit = e
	c.closePidfd()
	close(c.exited)
	s.log.Info("exited", "id", c.id, "pid", c.pid, "code", e.Code, "signal", int(e.Signal))
}

// Shutdown kills every container, waits for their exits to be recorded,
// destroys their cgroups and libcontainer state, and removes the pod's
// link to the shim; the shim then stops serving the pod. It may be called
// again after an error. The exit records stay for ketchd to read.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.starts.Wait()

	s.mu.Lock()
	var order []*container
	for id, c := range s.containers {
		if id != s.id {
			order = append(order, c)
		}
	}
	// The sandbox goes last: app containers join its namespaces.
	if c, ok := s.containers[s.id]; ok {
		order = append(order, c)
	}
	s.mu.Unlock()

	for _, c := range order {
		if err := s.destroy(ctx, c); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(s.runc.Root); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	// Last: a pod without its link is one whose Shutdown is done.
	if err := os.Remove(filepath.Join(s.dir, shim.ShimLink)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// destroy kills c, waits until the reaper has recorded its exit, and
// removes its cgroup and libcontainer state.
func (s *Service) destroy(ctx context.Context, c *container) error {
	// A start under way is let finish, and none may follow: ketch-runc's
	// destroy and run are processes of their own, and a run after the
	// destroy would mount into a rootfs ketchd is releasing.
	if err := c.settle(ctx); err != nil {
		return fmt.Errorf("delete %s: %w", c.id, err)
	}
	c.deleting = true
	c.mu.Unlock()
	if c.running() {
		// KILL of a private PID namespace's init kills the whole namespace;
		// with a shared one libcontainer kills every PID in the cgroup.
		err := s.Kill(ctx, c.id, syscall.SIGKILL, true)
		if err != nil && !errdefs.IsFailedPrecondition(err) {
			return fmt.Errorf("kill %s: %w", c.id, err)
		}
		timer := time.NewTimer(stopTimeout)
		defer timer.Stop()
		select {
		case <-c.exited:
		case <-timer.C:
			return fmt.Errorf("%s did not exit %v after KILL: %w", c.id, stopTimeout, errdefs.ErrUnavailable)
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", c.id, ctx.Err())
		}
	}
	c.mu.Lock()
	tried := c.tried
	c.mu.Unlock()
	// Nothing but its spec was made for a container never started; the
	// exit of one that ran usually took its state and cgroups.
	switch {
	case !tried:
		if err := os.RemoveAll(filepath.Join(s.runc.Root, c.id)); err != nil {
			return fmt.Errorf("delete %s: %w", c.id, err)
		}
	case !(c.stopped() && c.destroyed):
		if err := s.release(ctx, c); err != nil {
			return err
		}
	}
	if cio := c.stdio(); cio != nil {
		cio.close()
	}
	s.mu.Lock()
	delete(s.containers, c.id)
	s.mu.Unlock()
	return nil
}

// cgroupPids are the processes in the cgroup paths name (libcontainer's
// map: cgroup v2's is "", v1's devices one has every process).
func cgroupPids(paths map[string]string) ([]int, error) {
	p, ok := paths[""]
	if !ok {
		p = paths["devices"]
	}
	if p == "" {
		return nil, errors.New("no cgroup")
	}
	return cgroups.GetAllPids(p)
}

// release removes what container c, whose init has exited, holds besides
// its rootfs: its cgroups and libcontainer state.
// With cgroupfs and no process left in its cgroups, the shim removes the
// empty directories itself, as libcontainer's destroy would; else
// ketch-runc destroys it (KILLs what a shared PID namespace kept, stops a
// systemd unit), a process the shim spares every exit.
func (s *Service) release(ctx context.Context, c *container) error {
	if paths := c.cgroupPaths(); c.cgroupfs && paths != nil {
		if pids, err := cgroupPids(paths); err == nil && len(pids) == 0 &&
			cgroups.RemovePaths(maps.Clone(paths)) == nil &&
			os.RemoveAll(filepath.Join(s.runc.Root, c.id)) == nil {
			return nil
		}
	}
	return s.reaper.hold(func() error { return s.runc.Destroy(ctx, c.id) })
}
