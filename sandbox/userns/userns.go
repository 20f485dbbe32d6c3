// Package userns makes the user namespaces of pods that do not share the
// node's (kubelet's hostUsers: false) and pins them by bind mount, as
// package netns pins network namespaces.
//
// A Go program cannot unshare(CLONE_NEWUSER) itself: the kernel refuses it
// to a process with more than one thread. So a helper process is cloned
// into the new namespaces instead. It never runs a single instruction of
// its own: it asks to be traced before its execve, so the kernel stops it
// right after, and it is killed once its namespaces are pinned.
package userns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Do starts a helper in a new user namespace with the given mappings and,
// with network, in a new network namespace that the user namespace owns;
// runs fn with the helper's PID (its namespaces are /proc/<pid>/ns/user
// and /proc/<pid>/ns/net); then kills and reaps it. The namespaces outlive
// the helper only if fn pins them.
//
// A pod's network namespace must belong to its user namespace: the kernel
// lets the pod mount sysfs and write its net.* sysctls only then, and
// containerd and CRI-O make it so too.
func Do(uids, gids []specs.LinuxIDMapping, network bool, fn func(pid int) error) (retErr error) {
	if len(uids) == 0 || len(gids) == 0 {
		return fmt.Errorf("user namespace needs uid and gid mappings: %w", errdefs.ErrInvalidArgument)
	}
	// The helper's parent-death signal belongs to the thread that forked
	// it: locked, no other goroutine can make Go end that thread (as an
	// exiting locked goroutine does) while the helper is needed.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	attr := &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER,
		UidMappings: idMaps(uids),
		GidMappings: idMaps(gids),
		// Containers set their supplementary groups: "deny" in setgroups
		// would forbid it for good in this namespace.
		GidMappingsEnableSetgroups: true,
		// Stopped by the kernel right after execve: the binary never runs.
		Ptrace: true,
		// If ketchd dies meanwhile, the helper must not live on, detached
		// from its tracer and free to run.
		Pdeathsig: unix.SIGKILL,
	}
	if network {
		// After the mappings are written: the new netns is made inside the
		// new user namespace, so that namespace owns it.
		attr.Unshareflags = unix.CLONE_NEWNET
	}
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"ketch-userns-helper"}, &syscall.ProcAttr{Sys: attr})
	if err != nil {
		return fmt.Errorf("start user namespace helper: %w", err)
	}
	defer func() {
		if err := kill(pid); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("end user namespace helper %d: %w", pid, err))
		}
	}()
	// ForkExec returns once execve succeeded, a moment before the kernel
	// stops the helper: fn gets it stopped, never in between.
	if err := waitStop(pid); err != nil {
		return fmt.Errorf("user namespace helper %d: %w", pid, err)
	}
	return fn(pid)
}

// waitStop waits for the helper's ptrace stop after its execve.
func waitStop(pid int) error {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return err
		case ws.Stopped():
			return nil
		default:
			return fmt.Errorf("ended before it stopped: status %#x", uint32(ws))
		}
	}
}

func idMaps(m []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(m))
	for i, e := range m {
		out[i] = syscall.SysProcIDMap{ContainerID: int(e.ContainerID), HostID: int(e.HostID), Size: int(e.Size)}
	}
	return out
}

// kill ends the helper and reaps it. A traced child reports its ptrace
// stop to wait even without WUNTRACED, so a stop seen before the KILL
// lands is skipped, not taken for the end.
func kill(pid int) error {
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return err
		case ws.Exited() || ws.Signaled():
			return nil
		}
	}
}

// Pin bind-mounts the namespace file src (a /proc/<pid>/ns/<kind>) on
// path, which it creates, so that the namespace outlives every process in
// it (netns.Remove unpins it). An existing file at path is ErrAlreadyExists.
func Pin(src, path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("namespace pin %s: %w", path, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("namespace pin: %w", err)
	}
	f.Close()
	if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("pin namespace %s at %s: %w", src, path, err)
	}
	return nil
}
