package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"golang.org/x/sync/errgroup"

	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox/netns"
	"ketch.dev/ketch/sandbox/userns"
)

// networkDown marks a pod whose network Stop has torn down, so that a
// second Stop and the Remove after it do not run CNI DEL again.
const networkDown = "network-down"

// cleanupTimeout bounds the undoing of a failed Run: the request's deadline
// may be what made it fail.
const cleanupTimeout = 30 * time.Second

// Run starts pod s: its files, its namespaces and CNI network, its shim
// and, where it has one (hasInit), ketch-init. CNI ADD and the rest run at
// the same time. A failure at any step undoes every step before it, so a
// failed Run leaves nothing behind and can be retried with the same Spec.
func (m *Manager) Run(ctx context.Context, s Spec) (_ Pod, retErr error) {
	if s.Hostname == "" && !s.HostNetwork {
		// What a new UTS namespace starts with, as in containerd.
		s.Hostname, _ = os.Hostname()
	}
	if err := checkSpec(s); err != nil {
		return Pod{}, fmt.Errorf("run pod %s: %w", s.ID, err)
	}
	cgroupsPath, err := oci.CgroupsPath(m.o.CgroupDriver, m.cgroupParent(s), s.ID)
	if err != nil {
		return Pod{}, fmt.Errorf("run pod %s: %w", s.ID, err)
	}
	defer m.lock(s.ID)()
	dir := m.podDir(s.ID)
	// Only root enters a pod's directory (it holds the pod's /dev/shm), and
	// the root group of the pod's user namespace, which mounts its files.
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			err = fmt.Errorf("pod directory %s exists: %w", dir, errdefs.ErrAlreadyExists)
		}
		return Pod{}, fmt.Errorf("run pod %s: %w", s.ID, err)
	}
	defer func() {
		if retErr == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if err := m.remove(ctx, s); err != nil {
			slog.Error("undo failed pod start", "pod", s.ID, "err", err)
			retErr = fmt.Errorf("%w; undoing it failed too: %v", retErr, err)
		}
	}()

	if s.UserNS != nil {
		if err := groupPassable(dir, int(s.UserNS.GIDs[0].HostID)); err != nil {
			return Pod{}, fmt.Errorf("run pod %s: %w", s.ID, err)
		}
	}
	if err := m.reservePorts(s); err != nil {
		return Pod{}, fmt.Errorf("run pod %s: %w", s.ID, err)
	}
	files, err := writeFiles(dir, s)
	if err != nil {
		return Pod{}, fmt.Errorf("run pod %s: %w", s.ID, err)
	}
	shm := hostShm
	if !s.HostIPC {
		if shm, err = mountShm(dir, m.o.ShmSize); err != nil {
			return Pod{}, fmt.Errorf("run pod %s: %w", s.ID, err)
		}
	}
	var pod Pod
	if pod.NetNSPath, err = m.namespaces(s); err != nil {
		return Pod{}, fmt.Errorf("run pod %s: %w", s.ID, err)
	}

	// Neither step cancels the other when it fails: a plugin killed half-way
	// through ADD can leave what DEL cannot undo. The deadline bounds both.
	var g errgroup.Group
	if pod.NetNSPath != "" {
		g.Go(func() error {
			res, err := m.o.Network.Setup(ctx, s.ID, pod.NetNSPath, cniPod(s))
			pod.IPs = res.IPs
			return err
		})
	}
	g.Go(func() error {
		c, err := m.startShim(ctx, s.ID)
		if err != nil {
			return err
		}
		if err := makeCgroupParent(cgroupsPath); err != nil {
			return err
		}
		if !hasInit(s) {
			return pinNamespaces(s, pod.NetNSPath, m.nsPins(s.ID))
		}
		if pod.PID, err = m.startInit(ctx, c, s, files, shm, pod.NetNSPath); err != nil {
			return err
		}
		return m.pinInitNamespaces(s.ID, pod.PID)
	})
	if err := g.Wait(); err != nil {
		return Pod{}, fmt.Errorf("run pod %s: %w", s.ID, err)
	}
	return pod, nil
}

// namespaces makes the pod's network namespace (none with the node's
// network) and returns its pin. A pod with a user namespace of its own
// gets that first, pinned in the pod's directory for ketch-init to join,
// and the network namespace is made inside it, so that it owns it.
func (m *Manager) namespaces(s Spec) (string, error) {
	if s.UserNS == nil {
		if s.HostNetwork {
			return "", nil
		}
		return netns.Create(m.netnsDir(), s.ID)
	}
	if err := reachableByPods(m.rootfs); err != nil {
		return "", err
	}
	var netnsPath string
	err := userns.Do(s.UserNS.UIDs, s.UserNS.GIDs, !s.HostNetwork, func(pid int) error {
		if err := userns.Pin(fmt.Sprintf("/proc/%d/ns/user", pid), m.usernsPath(s.ID)); err != nil {
			return err
		}
		if s.HostNetwork {
			return nil
		}
		var err error
		netnsPath, err = netns.Adopt(m.netnsDir(), s.ID, fmt.Sprintf("/proc/%d/ns/net", pid))
		return err
	})
	return netnsPath, err
}

// pinnedNamespaces are the namespaces of a pod its containers join through
// pins in the pod's directory. A pod with a PID 1 has them pinned from it,
// not joined through /proc/<pid>: should the PID 1 die and its PID be
// reused before ketchd sees it, a new container would join someone else's
// namespaces. A pinned PID namespace whose PID 1 died takes no new
// process, so such a container fails instead.
var pinnedNamespaces = []string{"ipc", "uts", "pid"}

// nsPins are the pins of pod id's namespaces, by kind, its user
// namespace's among them.
func (m *Manager) nsPins(id string) map[string]string {
	pins := map[string]string{"user": m.usernsPath(id)}
	for _, ns := range pinnedNamespaces {
		pins[ns] = filepath.Join(m.podDir(id), ns+"ns")
	}
	return pins
}

// pinInitNamespaces pins the namespaces of the pod's PID 1, just started:
// its shim is its parent, so the PID cannot be another process's yet.
func (m *Manager) pinInitNamespaces(id string, pid int) error {
	pins := m.nsPins(id)
	for _, ns := range pinnedNamespaces {
		if err := userns.Pin(fmt.Sprintf("/proc/%d/ns/%s", pid, ns), pins[ns]); err != nil {
			return err
		}
	}
	return nil
}

// reachableByPods fails unless every directory down to path lets others
// search it: runc resolves a rootfs from inside a pod's user namespace,
// where the node's root is nobody and no capability overrides a mode.
// ketch makes its own directories so; it changes no other.
func reachableByPods(path string) error {
	for p := path; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %#o) does not let others search it: pods with a user namespace cannot reach their rootfs below it: %w",
				p, fi.Mode().Perm(), errdefs.ErrFailedPrecondition)
		}
		if p == "/" || p == "." {
			return nil
		}
	}
}

// groupPassable lets group gid, and no one else but root, pass through dir.
func groupPassable(dir string, gid int) error {
	if err := os.Chown(dir, 0, gid); err != nil {
		return err
	}
	return os.Chmod(dir, 0o710)
}

// startShim has a shim serve pod id and connects to it.
func (m *Manager) startShim(ctx context.Context, id string) (*shim.Client, error) {
	if err := m.pool.place(ctx, id, m.podDir(id)); err != nil {
		return nil, err
	}
	return m.client(ctx, id)
}

// startInit has the pod's shim start ketch-init.
func (m *Manager) startInit(ctx context.Context, c *shim.Client, s Spec, f podFiles, shmPath, netnsPath string) (int, error) {
	hostname := s.Hostname
	if s.HostNetwork {
		hostname = ""
	}
	in := oci.SandboxInput{
		ID:             s.ID,
		Rootfs:         m.rootfs,
		Hostname:       hostname,
		NetNSPath:      netnsPath,
		HostPID:        s.HostPID,
		HostIPC:        s.HostIPC,
		HostUTS:        s.HostNetwork,
		CgroupDriver:   m.o.CgroupDriver,
		CgroupParent:   m.cgroupParent(s),
		OOMScoreAdj:    sandboxOOMScoreAdj,
		Sysctls:        s.Sysctls,
		ShmPath:        shmPath,
		HostsPath:      f.hosts,
		ResolvConfPath: f.resolvConf,
		HostnamePath:   f.hostname,
	}
	if s.UserNS != nil {
		in.UserNSPath, in.UIDMappings, in.GIDMappings = m.usernsPath(s.ID), s.UserNS.UIDs, s.UserNS.GIDs
	}
	spec, err := oci.SandboxSpec(in)
	if err != nil {
		return 0, err
	}
	return c.StartSandbox(ctx, spec)
}

// Stop ends the pod's processes and detaches it from the network; its
// files and its shim stay until Remove. Stopping a stopped pod succeeds.
func (m *Manager) Stop(ctx context.Context, s Spec) error {
	defer m.lock(s.ID)()
	if err := m.stopInit(ctx, s); err != nil {
		return fmt.Errorf("stop pod %s: %w", s.ID, err)
	}
	if err := m.teardown(ctx, s); err != nil {
		return fmt.Errorf("stop pod %s: %w", s.ID, err)
	}
	m.releasePorts(s.ID)
	return nil
}

// stopInit kills ketch-init and waits until the shim has recorded its exit.
// KILL rather than TERM: pause mode has nothing to clean up, and KILL of a
// PID namespace's init ends every process left in it at once. When the
// shim is gone, its pod's processes are killed without it. A pod without
// ketch-init has no process but its containers', which package cri stops.
func (m *Manager) stopInit(ctx context.Context, s Spec) error {
	if !hasInit(s) {
		return nil
	}
	id := s.ID
	c, err := m.client(ctx, id)
	if errdefs.IsNotFound(err) {
		return shim.Destroy(ctx, m.o.ShimBinary, m.podDir(id), id)
	}
	if err != nil {
		return err
	}
	err = c.Kill(ctx, id, syscall.SIGKILL, false)
	if err == nil {
		_, err = c.Wait(ctx, id)
	}
	switch {
	case c.Gone(err):
		m.forget(id)
		return shim.Destroy(ctx, m.o.ShimBinary, m.podDir(id), id)
	case errdefs.IsFailedPrecondition(err), errdefs.IsNotFound(err):
		return nil // exited already, or never started
	}
	return err
}

// teardown runs CNI DEL once, and removes the netns pin's use by the
// plugins; the pin itself goes at Remove, as the CRI keeps the network
// namespace path valid in the status of a stopped pod.
func (m *Manager) teardown(ctx context.Context, s Spec) error {
	if s.HostNetwork {
		return nil
	}
	marker := filepath.Join(m.podDir(s.ID), networkDown)
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	if err := m.o.Network.Teardown(ctx, s.ID, m.netnsPath(s.ID), cniPod(s)); err != nil {
		return err
	}
	if err := os.WriteFile(marker, nil, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Remove stops the pod if needed and removes everything it holds: shim,
// processes, cgroup, network, netns, mounts and files. Removing a removed
// pod succeeds.
func (m *Manager) Remove(ctx context.Context, s Spec) error {
	defer m.lock(s.ID)()
	if err := m.remove(ctx, s); err != nil {
		return fmt.Errorf("remove pod %s: %w", s.ID, err)
	}
	return nil
}

// remove undoes whatever of Run exists; it must cope with any step of Run
// missing, as it also undoes a Run that failed half-way.
func (m *Manager) remove(ctx context.Context, s Spec) error {
	dir := m.podDir(s.ID)
	c, err := m.client(ctx, s.ID)
	if err == nil {
		err = c.Shutdown(ctx)
		m.forget(s.ID)
		if c.Gone(err) {
			err = errdefs.ErrNotFound
		}
	}
	if errdefs.IsNotFound(err) {
		// A shim that died leaves its pod's processes and cgroup behind.
		err = shim.Destroy(ctx, m.o.ShimBinary, dir, s.ID)
	}
	if err != nil {
		return err
	}
	m.pool.leave(s.ID)
	if err := m.teardown(ctx, s); err != nil {
		return err
	}
	m.releasePorts(s.ID)
	if err := netns.Remove(m.netnsPath(s.ID)); err != nil {
		return err
	}
	for _, pin := range m.nsPins(s.ID) {
		if err := netns.Remove(pin); err != nil {
			return err
		}
	}
	if err := unmountShm(dir); err != nil {
		return err
	}
	if err := m.keepCounts(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return nil
}

// Ready reports whether the pod's ketch-init runs, or for a pod without
// one, whether its shim answers. A pod whose shim is gone is not ready.
func (m *Manager) Ready(ctx context.Context, s Spec) (bool, error) {
	id := s.ID
	c, err := m.client(ctx, id)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// A pod without ketch-init has no container of the pod's ID in its
	// shim: NotFound is the shim's answer, which is all that is asked.
	st, err := c.State(ctx, id)
	if c.Gone(err) && !m.gone(ctx, id, c, err) {
		// The shim lives; only the connection ended: ask once more.
		if c, err = m.client(ctx, id); err == nil {
			st, err = c.State(ctx, id)
		}
	}
	switch {
	case errdefs.IsNotFound(err):
		return !hasInit(s) && c != nil && !c.Closed(), nil
	case c != nil && c.Gone(err):
		m.forget(id)
		return false, nil
	case err != nil:
		return false, err
	}
	return st.Status == shim.StatusRunning, nil
}

// Wait blocks until the pod's ketch-init has exited or its shim is gone,
// and returns nil then; it returns ctx's error if ctx ends first. A pod
// without ketch-init lasts as long as its shim.
func (m *Manager) Wait(ctx context.Context, s Spec) error {
	id := s.ID
	for {
		c, err := m.client(ctx, id)
		if errdefs.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if hasInit(s) {
			_, err = c.Wait(ctx, id)
		} else {
			select {
			case <-c.Done():
				err = ttrpc.ErrClosed
			case <-ctx.Done():
			}
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case !c.Gone(err):
			return nil
		case m.gone(ctx, id, c, err):
			return nil // counted as a death by shimLost
		}
		// The shim lives; only the connection ended: wait again.
		if err := sleepCtx(ctx, redialPause); err != nil {
			return err
		}
	}
}

func checkSpec(s Spec) error {
	if !shim.ValidID(s.ID) {
		return fmt.Errorf("pod id %q: %w", s.ID, errdefs.ErrInvalidArgument)
	}
	if !s.HostNetwork && !oci.ValidHostname(s.Hostname) {
		return fmt.Errorf("hostname %q is not an RFC 1123 name: %w", s.Hostname, errdefs.ErrInvalidArgument)
	}
	for name := range s.Sysctls {
		if err := checkSysctl(s, name); err != nil {
			return err
		}
	}
	if s.DNS != nil {
		for _, srv := range s.DNS.Servers {
			if _, err := netip.ParseAddr(srv); err != nil {
				return fmt.Errorf("DNS server %q is not an IP address: %w", srv, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}
