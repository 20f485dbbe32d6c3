package cri

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// StopContainer sends the image's stop signal (TERM by default), waits up
// to timeout seconds, then KILLs every process of the container; timeout 0
// KILLs at once. It returns once the exit is recorded. Stopping a
// container that does not run, or does not exist, succeeds.
func (s *Server) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.StopContainerResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stop container: %w", err)
	}
	if err := s.stopContainer(ctx, c, time.Duration(req.GetTimeout())*time.Second); err != nil {
		return nil, fmt.Errorf("stop container %s: %w", c.ID, err)
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

func (s *Server) stopContainer(ctx context.Context, c store.Container, grace time.Duration) error {
	if c.State != store.ContainerRunning {
		return nil
	}
	if grace > 0 {
		sig, err := stopSignal(c.StopSignal)
		if err != nil {
			return err
		}
		if err := s.containers.SignalContainer(ctx, c.SandboxID, c.ID, sig, false); errdefs.IsNotFound(err) {
			return nil // removed meanwhile
		} else if err != nil && !errdefs.IsFailedPrecondition(err) {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, grace)
		e, err := s.containers.WaitContainer(wctx, c.SandboxID, c.ID)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			s.containerExited(c.SandboxID, c.ID, e, nil)
			return nil
		}
	}
	// KILL every process of the cgroup: a child the program left behind
	// must not keep the container's pipes or PID namespace alive.
	if err := s.containers.SignalContainer(ctx, c.SandboxID, c.ID, syscall.SIGKILL, true); errdefs.IsNotFound(err) {
		return nil
	} else if err != nil && !errdefs.IsFailedPrecondition(err) {
		return err
	}
	e, err := s.containers.WaitContainer(ctx, c.SandboxID, c.ID)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errdefs.IsNotFound(err) {
		return nil
	}
	s.containerExited(c.SandboxID, c.ID, e, err)
	return nil
}

// sigRTMin is SIGRTMIN as container programs see it: glibc keeps the
// kernel's first two real-time signals for itself.
const sigRTMin = 34

// stopSignal parses a stop signal as an image's config or
// criSignalName gives it ("SIGQUIT", "QUIT", "3", "SIGRTMIN+1").
func stopSignal(name string) (syscall.Signal, error) {
	if name == "" {
		return syscall.SIGTERM, nil
	}
	if n, err := strconv.Atoi(name); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name = strings.ToUpper(name)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if rt, ok := strings.CutPrefix(name, "SIGRTMIN"); ok {
		n := 0
		if plus, ok := strings.CutPrefix(rt, "+"); ok {
			n, _ = strconv.Atoi(plus)
		}
		if rt == "" || n > 0 && sigRTMin+n <= 64 {
			return syscall.Signal(sigRTMin + n), nil
		}
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("stop signal %q: %w", name, errdefs.ErrInvalidArgument)
}

// criSignalName is the name of a ContainerConfig's stop_signal (KEP-4960),
// "" for the runtime's default (the image's, else SIGTERM).
func criSignalName(sig runtimeapi.Signal) (string, error) {
	name, ok := runtimeapi.Signal_name[int32(sig)]
	if !ok {
		return "", fmt.Errorf("stop signal %d: %w", sig, errdefs.ErrInvalidArgument)
	}
	if sig == runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		return "", nil
	}
	name = strings.TrimPrefix(name, "SIGNAL_")
	if n, ok := strings.CutPrefix(name, "SIGRTMINPLUS"); ok {
		return "SIGRTMIN+" + n, nil
	}
	if n, ok := strings.CutPrefix(name, "SIGRTMAXMINUS"); ok {
		m, _ := strconv.Atoi(n)
		return strconv.Itoa(64 - m), nil
	}
	if name == "SIGRTMAX" {
		return "64", nil
	}
	return name, nil
}

// stopSignalOf is the stop signal of a container: its config's (KEP-4960),
// else its image's.
func stopSignalOf(cfg *runtimeapi.ContainerConfig, image string) string {
	if name, _ := criSignalName(cfg.GetStopSignal()); name != "" {
		return name
	}
	return image
}

// criSignal is the ContainerStatus form of the stop signal a container gets.
func criSignal(name string) runtimeapi.Signal {
	sig, err := stopSignal(name)
	if err != nil {
		return runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT
	}
	switch {
	case sig == sigRTMin:
		return runtimeapi.Signal_SIGNAL_SIGRTMIN
	case sig > sigRTMin && sig <= sigRTMin+15:
		return runtimeapi.Signal(runtimeapi.Signal_value[fmt.Sprintf("SIGNAL_SIGRTMINPLUS%d", sig-sigRTMin)])
	case sig == 64:
		return runtimeapi.Signal_SIGNAL_SIGRTMAX
	case sig > sigRTMin:
		return runtimeapi.Signal(runtimeapi.Signal_value[fmt.Sprintf("SIGNAL_SIGRTMAXMINUS%d", 64-sig)])
	}
	return runtimeapi.Signal(runtimeapi.Signal_value["SIGNAL_"+unix.SignalName(sig)])
}

// RemoveContainer kills the container if it runs and removes it, its
// writable layer and its record. Removing an unknown container succeeds.
func (s *Server) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remove container: %w", err)
	}
	if err := s.removeContainer(ctx, c); err != nil {
		return nil, fmt.Errorf("remove container %s: %w", c.ID, err)
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// removeContainer marks c as being removed (a restart finishes the job)
// and stops it, so that its true exit is in its record until the record
// goes. An exited container needs no mark: its exit is recorded already,
// and kubelet removes every exited container of a workflow node, so the
// store's writes (each a commit with its fsync) are a good part of it.
func (s *Server) removeContainer(ctx context.Context, c store.Container) error {
	if c.State != store.ContainerExited || c.Removing {
		if !c.Removing {
			var err error
			c, err = s.store.ContainerRemoving(c.ID)
			if errdefs.IsNotFound(err) {
				return nil // removed meanwhile
			}
			if err != nil {
				return err
			}
		}
		if err := s.stopContainer(ctx, c, 0); err != nil {
			return err
		}
	}
	return s.release(ctx, c)
}

// release removes stopped container c: what its shim holds first (once
// the shim has forgotten it, nothing can use or mount its rootfs, even a
// start a crash cut short), then its record and its rootfs side by side,
// not one after another: the two commits (the store's, the snapshot's)
// take ~0.5 ms each. A failed delete keeps both for kubelet's retry (each
// part is idempotent); a rootfs a crash left without its record, or a
// record of an exited container without its rootfs, is finished at the
// next start (collect).
func (s *Server) release(ctx context.Context, c store.Container) error {
	if err := s.containers.DeleteContainer(ctx, c.SandboxID, c.ID); err != nil {
		return err
	}
	rootfs := make(chan error, 1)
	go func() { rootfs <- s.releaseRootfs(ctx, c.ID) }()
	err := s.store.DeleteContainer(c.ID)
	if errdefs.IsNotFound(err) {
		err = nil
	}
	return errors.Join(err, <-rootfs)
}

// releaseRootfs unmounts container id's rootfs, removes its snapshot and
// the directory it was mounted in.
func (s *Server) releaseRootfs(ctx context.Context, id string) error {
	if err := s.releaseImageVolumes(ctx, id); err != nil {
		return err
	}
	if err := s.images.Release(ctx, id, s.containers.ContainerRootfs(id)); err != nil {
		return err
	}
	return s.containers.RemoveContainerDir(id)
}
