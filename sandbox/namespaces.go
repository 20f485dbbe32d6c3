package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"ketch.dev/ketch/sandbox/userns"
)

// hasInit tells whether pod s runs ketch-init as its PID 1. Only a pod
// whose containers share one PID namespace needs a process for it: its
// PID 1 reaps their orphans and keeps the namespace. The other namespaces
// of a pod are pinned without a process, as the netns always was (CRI-O's
// pinns does the same), which saves each pod a process and its start; a
// pod with a user namespace of its own keeps ketch-init, which makes its
// IPC and UTS namespaces inside that user namespace, as they must be.
func hasInit(s Spec) bool { return s.SharedPID || s.UserNS != nil }

// ipcSysctls are the sysctls outside fs.mqueue that the IPC namespace
// holds: the rest of kernel.* is the node's.
var ipcSysctls = []string{
	"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
	"kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
}

// checkSysctl refuses a sysctl that would not stay inside the pod: one no
// namespace of the pod holds (it would change the node), or one of a
// namespace the pod shares with the node. The kernel refuses bad values
// when they are written.
func checkSysctl(s Spec, name string) error {
	dotted := strings.ReplaceAll(name, "/", ".")
	if dotted == "" || slices.Contains(strings.Split(dotted, "."), "") || strings.Contains(name, "..") {
		return fmt.Errorf("sysctl %q is not a sysctl name: %w", name, errdefs.ErrInvalidArgument)
	}
	var ns string
	switch {
	case slices.Contains(ipcSysctls, dotted) || strings.HasPrefix(dotted, "fs.mqueue."):
		if !s.HostIPC {
			return nil
		}
		ns = "IPC"
	case strings.HasPrefix(dotted, "net."):
		if !s.HostNetwork {
			return nil
		}
		ns = "network"
	case dotted == "kernel.domainname":
		if !s.HostNetwork {
			return nil
		}
		ns = "UTS"
	default:
		return fmt.Errorf("sysctl %q is not namespaced: setting it would change the node: %w", name, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("sysctl %q with the node's %s namespace: %w", name, ns, errdefs.ErrInvalidArgument)
}

// sysctlPath is where sysctl name is under /proc/sys. A name with a slash
// separates its parts by slashes, and its dots are part of a name (an
// interface's, as in sysctl(8)).
func sysctlPath(name string) string {
	if strings.Contains(name, "/") {
		return filepath.Join("/proc/sys", name)
	}
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

// pinNamespaces makes the IPC and UTS namespaces of pod s, which has no
// PID 1 to hold them (hasInit), and pins them at pins (ipc, uts): a thread
// of ketchd moves into the pod's netns, unshares the two, sets the
// hostname and the pod's sysctls there, pins them and goes back. A
// namespace the pod shares with the node gets no pin.
func pinNamespaces(s Spec, netnsPath string, pins map[string]string) error {
	var flags int
	if !s.HostIPC {
		flags |= unix.CLONE_NEWIPC
	}
	if !s.HostNetwork {
		flags |= unix.CLONE_NEWUTS
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: Go ends the thread with this goroutine, so no
		// other goroutine ever runs in the pod's namespaces. The main
		// thread is parked instead, so the thread also goes back.
		runtime.LockOSThread()
		errc <- onPodThread(netnsPath, flags, func() error { return setUpNamespaces(s, flags, pins) })
	}()
	return <-errc
}

// onPodThread moves the current thread into the netns at netnsPath (none
// for "") and new namespaces of flags, runs fn, and moves it back.
func onPodThread(netnsPath string, flags int, fn func() error) error {
	for _, ns := range []struct {
		name string
		kind int
	}{{"net", unix.CLONE_NEWNET}, {"ipc", unix.CLONE_NEWIPC}, {"uts", unix.CLONE_NEWUTS}} {
		orig, err := unix.Open("/proc/thread-self/ns/"+ns.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open this thread's %s namespace: %w", ns.name, err)
		}
		defer unix.Close(orig)
		defer func() { _ = unix.Setns(orig, ns.kind) }()
	}
	if netnsPath != "" {
		fd, err := unix.Open(netnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", netnsPath, err)
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("enter netns %s: %w", netnsPath, err)
		}
	}
	if flags != 0 {
		if err := unix.Unshare(flags); err != nil {
			return fmt.Errorf("unshare the pod's namespaces: %w", err)
		}
	}
	return fn()
}

func setUpNamespaces(s Spec, flags int, pins map[string]string) error {
	if flags&unix.CLONE_NEWUTS != 0 {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("hostname %q: %w", s.Hostname, err)
		}
	}
	// /proc/sys shows the namespaces of the thread that opens a file.
	for name, value := range s.Sysctls {
		if err := os.WriteFile(sysctlPath(name), []byte(value), 0); err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ERANGE) {
				err = fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
			}
			return fmt.Errorf("sysctl %s=%q: %w", name, value, err)
		}
	}
	for kind, flag := range map[string]int{"ipc": unix.CLONE_NEWIPC, "uts": unix.CLONE_NEWUTS} {
		if flags&flag == 0 {
			continue
		}
		// /proc/self/ns would be the main thread's namespaces.
		if err := userns.Pin("/proc/thread-self/ns/"+kind, pins[kind]); err != nil {
			return err
		}
	}
	return nil
}
