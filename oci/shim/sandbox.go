package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/cgroups"
	// Without it libcontainer cannot apply the device rules every
	// container has ("cgroup manager is not configured to set device rules").
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/cgroups/systemd"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/configs/validate"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"
)

// StartSandbox starts the pod's PID 1 and returns its host PID. Bad input
// is refused before anything is created; a failure after that undoes every
// step, so a failed call leaves no process, cgroup or state behind and may
// be retried.
func (s *Service) StartSandbox(_ context.Context, cfg *SandboxConfig) (int, error) {
	if err := checkSandboxConfig(cfg); err != nil {
		return 0, fmt.Errorf("start sandbox %s: %w", s.id, err)
	}
	if err := s.reserve(s.id); err != nil {
		return 0, fmt.Errorf("start sandbox %s: %w", s.id, err)
	}
	defer s.unreserve(s.id)

	c, err := s.startSandbox(cfg)
	if err != nil {
		return 0, fmt.Errorf("start sandbox %s: %w", s.id, err)
	}
	s.mu.Lock()
	s.containers[s.id] = c
	s.mu.Unlock()
	return c.pid, nil
}

func (s *Service) startSandbox(cfg *SandboxConfig) (_ *container, retErr error) {
	oom, err := clampOOMScoreAdj(cfg.OOMScoreAdj)
	if err != nil {
		return nil, err
	}
	if err := makeCgroupParent(cfg.Cgroup); err != nil {
		return nil, err
	}
	spec := sandboxSpec(cfg, oom)
	config, err := s.libcontainerConfig(&specconv.CreateOpts{
		CgroupName:       s.id,
		UseSystemdCgroup: cfg.Cgroup.Driver == DriverSystemd,
		Spec:             spec,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	// libcontainer.Create validates too, but its errors do not say that the
	// request was at fault; this one does (bad sysctls, mostly).
	if err := validate.Validate(config); err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	lc, err := libcontainer.Create(s.stateRoot(), s.id, config)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	defer func() {
		if retErr != nil {
			if err := lc.Destroy(); err != nil {
				retErr = fmt.Errorf("%w; clean-up: %w", retErr, err)
			}
		}
	}()
	// As for an app container: a shim killed before libcontainer saved
	// its state (once the init runs) leaves a cgroup only this finds.
	if err := saveConfig(s.stateRoot(), s.id, config); err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	c := newContainer(s.id, lc)
	proc := &libcontainer.Process{
		Args: spec.Process.Args,
		Env:  spec.Process.Env,
		Cwd:  spec.Process.Cwd,
		// ketch-init only warns; its words belong in the shim's log.
		Stdout: os.Stderr,
		Stderr: os.Stderr,
		Init:   true,
	}
	if len(cfg.Args) == 0 { // ketch-init, not a program of the caller's
		counts, args, err := s.withCounts(s.id, proc.Args)
		if err != nil {
			return nil, err
		}
		defer counts.Close()
		proc.Args, proc.ExtraFiles = args, []*os.File{counts}
	}
	_, err = s.reaper.start(func() (int, error) {
		if err := lc.Run(proc); err != nil {
			return 0, err
		}
		// Set before the reaper learns the PID, so its report can read it.
		c.pid, err = proc.Pid()
		return c.pid, err
	}, func(e Exit) { s.exited(c, e) })
	// A sysctl value the kernel refuses (a word for a number) fails only
	// in the container's init, whose error comes back as text: the
	// request's fault all the same.
	if err != nil && strings.Contains(err.Error(), "failed to write sysctl") {
		return nil, fmt.Errorf("run %s: %w: %w", spec.Process.Args[0], errdefs.ErrInvalidArgument, err)
	}
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", spec.Process.Args[0], err)
	}
	return c, nil
}

// libcontainerConfig is runc's specconv of a spec. Given a user namespace
// to join by a path other than /proc/<pid>/ns/user, specconv forks a
// helper into it to read its mappings and waits for that helper by PID: it
// must run while the reaper holds off, or wait4(-1) takes the helper.
func (s *Service) libcontainerConfig(o *specconv.CreateOpts) (*configs.Config, error) {
	var config *configs.Config
	err := s.reaper.hold(func() error {
		var err error
		config, err = specconv.CreateLibcontainerConfig(o)
		return err
	})
	return config, err
}

// checkSandboxConfig refuses what libcontainer would fail on late or with an
// unclear message, so that the caller learns which field is wrong.
func checkSandboxConfig(c *SandboxConfig) error {
	if err := checkDir("rootfs", c.Rootfs); err != nil {
		return err
	}
	if len(c.Args) > 0 && c.Args[0] == "" {
		return fmt.Errorf("empty args[0]: %w", errdefs.ErrInvalidArgument)
	}
	exe := "/ketch-init"
	if len(c.Args) > 0 {
		exe = c.Args[0]
	}
	if filepath.IsAbs(exe) {
		if _, err := os.Stat(filepath.Join(c.Rootfs, exe)); err != nil {
			return fmt.Errorf("%s in rootfs %s: %w", exe, c.Rootfs, asNotFound(err))
		}
	}
	switch {
	case c.HostUTS && c.Hostname != "":
		return fmt.Errorf("hostname %q with the host's UTS namespace: %w", c.Hostname, errdefs.ErrInvalidArgument)
	case !c.HostUTS && !ValidHostname(c.Hostname):
		return fmt.Errorf("hostname %q is not an RFC 1123 name: %w", c.Hostname, errdefs.ErrInvalidArgument)
	}
	if c.NetNSPath != "" {
		if err := checkNamespace("netns", c.NetNSPath, unix.CLONE_NEWNET); err != nil {
			return err
		}
	}
	if err := checkUserNS(c); err != nil {
		return err
	}
	if err := checkCgroup(c.Cgroup); err != nil {
		return err
	}
	if c.ShmPath != "" {
		if err := checkDir("shm path", c.ShmPath); err != nil {
			return err
		}
	}
	for _, f := range []struct{ what, path string }{
		{"hosts file", c.HostsPath}, {"resolv.conf", c.ResolvConfPath}, {"hostname file", c.HostnamePath},
	} {
		if f.path == "" {
			continue
		}
		if fi, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.what, asNotFound(err))
		} else if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s %s is not a file: %w", f.what, f.path, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func checkDir(what, path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s %q is not an absolute path: %w", what, path, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, asNotFound(err))
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s %s is not a directory: %w", what, path, errdefs.ErrInvalidArgument)
	}
	return nil
}

// checkNamespace makes sure path is a namespace of kind now. A namespace
// bind mount that was unmounted leaves an empty file behind, which
// libcontainer would only reject deep inside nsexec.
func checkNamespace(what, path string, kind int) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, asNotFound(err))
	}
	defer f.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("%s %s is not a namespace (was it unmounted?): %w", what, path, errdefs.ErrInvalidArgument)
	}
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if t != kind {
		return fmt.Errorf("%s %s is a namespace of another kind: %w", what, path, errdefs.ErrInvalidArgument)
	}
	return nil
}

// checkUserNS refuses a user namespace without the mappings it must have,
// and the host's PID or IPC namespace in one: the kernel lets a user
// namespace mount proc and mqueue only for namespaces it owns.
func checkUserNS(c *SandboxConfig) error {
	if c.UserNSPath == "" {
		if len(c.UIDMappings) > 0 || len(c.GIDMappings) > 0 {
			return fmt.Errorf("uid and gid mappings without a user namespace: %w", errdefs.ErrInvalidArgument)
		}
		return nil
	}
	switch {
	case len(c.UIDMappings) == 0 || len(c.GIDMappings) == 0:
		return fmt.Errorf("user namespace %s without its uid and gid mappings: %w", c.UserNSPath, errdefs.ErrInvalidArgument)
	case c.HostPID || c.HostIPC:
		return fmt.Errorf("a user namespace with the host's PID or IPC namespace: %w", errdefs.ErrInvalidArgument)
	}
	return checkNamespace("user namespace", c.UserNSPath, unix.CLONE_NEWUSER)
}

func checkCgroup(c Cgroup) error {
	if c.Name == "" || strings.ContainsAny(c.Name, "/:") || c.Name == "." || c.Name == ".." {
		return fmt.Errorf("cgroup name %q: %w", c.Name, errdefs.ErrInvalidArgument)
	}
	switch c.Driver {
	case "", DriverCgroupfs:
		for _, p := range strings.Split(c.Parent, "/") {
			if p == ".." {
				return fmt.Errorf("cgroup parent %q: %w", c.Parent, errdefs.ErrInvalidArgument)
			}
		}
	case DriverSystemd:
		if !systemd.IsRunningSystemd() {
			return fmt.Errorf("cgroup driver systemd: systemd does not run this host: %w", errdefs.ErrFailedPrecondition)
		}
		if c.Parent != "" && !strings.HasSuffix(c.Parent, ".slice") {
			return fmt.Errorf("cgroup parent %q is not a systemd slice: %w", c.Parent, errdefs.ErrInvalidArgument)
		}
	default:
		return fmt.Errorf("cgroup driver %q: %w", c.Driver, errdefs.ErrInvalidArgument)
	}
	return nil
}

// PrepareCgroup refuses a cgroup whose driver or parent cannot work and
// creates a cgroupfs parent: what StartSandbox does for the cgroup of a
// pod that has no PID 1, whose containers' cgroups go beside it.
func PrepareCgroup(c Cgroup) error {
	if err := checkCgroup(c); err != nil {
		return err
	}
	return makeCgroupParent(c)
}

// makeCgroupParent creates a cgroupfs parent in every hierarchy, as
// libcontainer would, so that one that cannot exist (a path through a
// file, say) fails here with its name rather than half-way through
// libcontainer's setup, whose own clean-up then fails as well.
func makeCgroupParent(c Cgroup) error {
	if c.Driver == DriverSystemd || strings.Trim(c.Parent, "/") == "" {
		return nil
	}
	mounts, err := cgroups.GetCgroupMounts(false)
	if err != nil {
		return fmt.Errorf("find cgroup hierarchies: %w", err)
	}
	for _, m := range mounts {
		if err := os.MkdirAll(filepath.Join(m.Mountpoint, c.Parent), 0o755); err != nil {
			return fmt.Errorf("cgroup parent %s cannot be created: %w: %w", c.Parent, errdefs.ErrFailedPrecondition, err)
		}
	}
	return nil
}

func asNotFound(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	}
	return err
}
