package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"

	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox/netns"
)

// PodPaths are the pod's files and namespaces that its containers' specs
// bind-mount or join.
type PodPaths struct {
	NetNS                            string // "" with the node's network
	Hosts, ResolvConf, Hostname, Shm string
	// Namespaces are the pins of the pod's other namespaces, by kind
	// ("ipc", "uts", "pid", "user"), where the pod has them: one without
	// ketch-init has no "pid", nor an "ipc" or "uts" it shares with the
	// node.
	Namespaces map[string]string
	// CgroupParent is where its containers' cgroups go, beside its own.
	CgroupParent string
}

// Paths returns pod s's PodPaths.
func (m *Manager) Paths(s Spec) PodPaths {
	dir := m.podDir(s.ID)
	shm := filepath.Join(dir, shmDir)
	if s.HostIPC {
		shm = hostShm
	}
	pins := m.nsPins(s.ID)
	for kind, p := range pins {
		if !fileExists(p) {
			delete(pins, kind)
		}
	}
	return PodPaths{
		NetNS:        m.NetNSPath(s),
		Hosts:        filepath.Join(dir, hostsFile),
		ResolvConf:   filepath.Join(dir, resolvConfFile),
		Hostname:     filepath.Join(dir, hostnameFile),
		Shm:          shm,
		Namespaces:   pins,
		CgroupParent: m.cgroupParent(s),
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ContainerRootfs is where container id's rootfs is mounted: outside the
// pod's directory, so removing a pod can never reach into a rootfs, and in
// a directory of its own that MakeContainerDir makes.
func (m *Manager) ContainerRootfs(id string) string {
	dir := filepath.Join(m.containersDir(), id)
	// ketchd before 0.1.0 mounted a rootfs on that directory itself.
	if mounted, _ := mountinfo.Mounted(dir); mounted {
		return dir
	}
	return filepath.Join(dir, "rootfs")
}

// MakeContainerDir makes the directory container id's rootfs is mounted
// in, which only root may enter: a rootfs holds its image's setuid
// binaries. With a rootGID (the host GID of the root of the container's
// user namespace; -1 without one) that group may pass through as well, as
// runc resolves the rootfs from inside the user namespace.
func (m *Manager) MakeContainerDir(id string, rootGID int) error {
	dir := filepath.Join(m.containersDir(), id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("container directory: %w", err)
	}
	if rootGID < 0 {
		return nil
	}
	if err := reachableByPods(m.containersDir()); err != nil {
		return err
	}
	return groupPassable(dir, rootGID)
}

// RemoveContainerDir removes what MakeContainerDir made, once the rootfs
// is unmounted and gone. Removing it twice succeeds.
func (m *Manager) RemoveContainerDir(id string) error {
	if err := os.Remove(filepath.Join(m.containersDir(), id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("container directory: %w", err)
	}
	return nil
}

func (m *Manager) containersDir() string { return filepath.Join(m.o.StateDir, "containers") }

// Shim is pod podID's shim, which drives the pod's containers: every
// container call goes to it, but those that must outlive it (a signal, a
// wait, a delete: below). errdefs.ErrFailedPrecondition when the pod has
// none (stopped with its shim gone, or never started).
func (m *Manager) Shim(ctx context.Context, podID string) (*shim.Client, error) {
	c, err := m.client(ctx, podID)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("pod %s has no shim: %w", podID, errdefs.ErrFailedPrecondition)
	}
	return c, err
}

// SignalContainer sends sig to container id's init, or with all to every
// process of its cgroup. errdefs.ErrFailedPrecondition: it does not run.
func (m *Manager) SignalContainer(ctx context.Context, podID, id string, sig syscall.Signal, all bool) error {
	c, err := m.Shim(ctx, podID)
	if err != nil {
		return err
	}
	for {
		err = c.Kill(ctx, id, sig, all)
		switch {
		case !c.Gone(err):
			return err
		case m.gone(ctx, podID, c, err):
			// Its processes died with the shim: nothing runs to be
			// signalled, and WaitContainer tells how it ended.
			return fmt.Errorf("signal %s: the pod's shim is gone: %w", id, errdefs.ErrFailedPrecondition)
		}
		// The socket still answered: the shim lives and only the
		// connection ended, or it is still dying. Ask again.
		if err := sleepCtx(ctx, redialPause); err != nil {
			return err
		}
		if c, err = m.Shim(ctx, podID); err != nil {
			return err // FailedPrecondition once the shim is gone
		}
	}
}

// WaitContainer returns container id's exit once recorded. When the shim is
// gone, the exit it recorded on disk, if any, is the answer; a container
// whose shim died before its exit was recorded ends with ErrShimGone.
func (m *Manager) WaitContainer(ctx context.Context, podID, id string) (shim.Exit, error) {
	c, err := m.client(ctx, podID)
	for err == nil {
		var e shim.Exit
		e, err = c.Wait(ctx, id)
		switch {
		case !c.Gone(err):
			return e, err
		case m.gone(ctx, podID, c, err):
			// err ends the loop: what the dead shim left is read below.
		default: // the shim lives; only the connection ended
			if err = sleepCtx(ctx, redialPause); err == nil {
				c, err = m.client(ctx, podID)
			}
		}
	}
	if ctx.Err() != nil {
		return shim.Exit{}, ctx.Err()
	}
	if !errdefs.IsNotFound(err) && !errdefs.IsUnavailable(err) {
		return shim.Exit{}, err
	}
	if e, rerr := shim.ReadExit(m.podDir(podID), id); rerr == nil {
		return e, nil
	}
	// Reported exited from now on, so it must not run on unseen: its
	// output has nowhere to go and nothing would record its end.
	if err := shim.Destroy(ctx, m.o.ShimBinary, m.podDir(podID), id); err != nil {
		return shim.Exit{}, fmt.Errorf("%w; and ending what is left of %s: %w", ErrShimGone, id, err)
	}
	return shim.Exit{}, ErrShimGone
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrShimGone: the pod's shim died, taking the container's exit with it.
var ErrShimGone = fmt.Errorf("the pod's shim is gone: %w", errdefs.ErrUnavailable)

// DeleteContainer kills container id if it runs and removes it from its
// shim. A pod without a shim has nothing left of the container but what
// shim.Destroy finds on disk.
func (m *Manager) DeleteContainer(ctx context.Context, podID, id string) error {
	c, err := m.client(ctx, podID)
	if err == nil {
		err = c.DeleteContainer(ctx, id)
		if !c.Gone(err) {
			return err
		}
		m.forget(podID)
	} else if !errdefs.IsNotFound(err) {
		return err
	}
	return shim.Destroy(ctx, m.o.ShimBinary, m.podDir(podID), id)
}

// PortForward connects stream to TCP port on the pod's loopback, from
// inside its network namespace: no socat or nsenter is needed on the node.
// It returns when either side closes.
func (m *Manager) PortForward(ctx context.Context, s Spec, port int32, stream io.ReadWriteCloser) error {
	if port <= 0 || port > 65535 {
		return fmt.Errorf("port-forward to port %d: %w", port, errdefs.ErrInvalidArgument)
	}
	var conn net.Conn
	dial := func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		return err
	}
	var err error
	if s.HostNetwork {
		err = dial()
	} else {
		err = netns.Do(m.netnsPath(s.ID), dial)
	}
	if err != nil {
		return fmt.Errorf("port-forward to port %d of pod %s: %w", port, s.ID, err)
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(conn, stream); done <- struct{}{} }()
	go func() { _, _ = io.Copy(stream, conn); done <- struct{}{} }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}
