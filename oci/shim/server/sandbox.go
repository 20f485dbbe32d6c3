package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"ketch.dev/ketch/oci/runc"
	"ketch.dev/ketch/oci/shim"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// StartSandbox starts the pod's PID 1 from spec (oci.SandboxSpec) and
// returns its host PID. Bad input is refused before anything is created; a
// failure after that undoes every step, so a failed call leaves no
// process, cgroup or state behind and may be retried.
func (s *Service) StartSandbox(_ context.Context, specJSON []byte) (int, error) {
	spec, err := decodeSpec(specJSON)
	if err == nil {
		err = checkSandboxSpec(spec)
	}
	if err != nil {
		return 0, fmt.Errorf("start sandbox %s: %w", s.id, err)
	}
	if err := s.reserve(s.id); err != nil {
		return 0, fmt.Errorf("start sandbox %s: %w", s.id, err)
	}
	defer s.unreserve(s.id)

	c, err := s.startSandbox(spec, specJSON)
	if err != nil {
		return 0, fmt.Errorf("start sandbox %s: %w", s.id, err)
	}
	s.mu.Lock()
	s.containers[s.id] = c
	s.mu.Unlock()
	return c.pid, nil
}

func (s *Service) startSandbox(spec *runSpec, specJSON []byte) (_ *container, retErr error) {
	defer func() {
		if retErr != nil {
			err := s.reaper.hold(func() error { return s.runc.Destroy(context.Background(), s.id) })
			if err != nil {
				retErr = fmt.Errorf("%w; clean-up: %w", retErr, err)
			}
		}
	}()
	c := newContainer(s.id, spec)
	c.tried = true
	counts, args, err := s.withCounts(s.id, spec.Process.Args)
	if err != nil {
		return nil, err
	}
	defer counts.Close()
	proc := &runc.Process{
		Args:       args,
		Env:        spec.Process.Env,
		Cwd:        spec.Process.Cwd,
		ExtraFiles: []*os.File{counts},
		// ketch-init only warns; its words belong in the shim's log.
		Stdout: os.Stderr,
		Stderr: os.Stderr,
		Init:   true,
	}
	_, err = s.reaper.start(func() (int, error) {
		r, err := s.runc.Run(s.id, specJSON, proc)
		// Set before the reaper learns the PID, so its report can read it.
		if err == nil {
			c.pid, err = r.Pid, c.ran(r)
		}
		return c.pid, err
	}, func(e shim.Exit) { s.exited(c, e) })
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

// checkSandboxSpec refuses what libcontainer would fail on late or with an
// unclear message, so that the caller learns which part is wrong: what
// oci.SandboxSpec cannot know, the node's side of the spec.
func checkSandboxSpec(spec *runSpec) error {
	if spec.Process == nil || len(spec.Process.Args) == 0 || spec.Process.Args[0] == "" || spec.Root == nil || spec.Linux == nil {
		return fmt.Errorf("spec needs process args, root and linux: %w", errdefs.ErrInvalidArgument)
	}
	if err := checkDir("rootfs", spec.Root.Path); err != nil {
		return err
	}
	if exe := spec.Process.Args[0]; filepath.IsAbs(exe) {
		if _, err := os.Stat(filepath.Join(spec.Root.Path, exe)); err != nil {
			return fmt.Errorf("%s in rootfs %s: %w", exe, spec.Root.Path, asNotFound(err))
		}
	}
	for _, ns := range spec.Linux.Namespaces {
		kind, ok := namespaceKinds[ns.Type]
		if ns.Path == "" || !ok {
			continue
		}
		if err := checkNamespace(string(ns.Type)+" namespace", ns.Path, kind); err != nil {
			return err
		}
	}
	if !filepath.IsAbs(spec.Linux.CgroupsPath) && !systemdRuns() {
		return fmt.Errorf("cgroup driver systemd: systemd does not run this host: %w", errdefs.ErrFailedPrecondition)
	}
	for _, m := range spec.Mounts {
		if m.Type != "bind" {
			continue
		}
		if _, err := os.Stat(m.Source); err != nil {
			return fmt.Errorf("mount on %s: %w", m.Destination, asNotFound(err))
		}
	}
	return nil
}

// namespaceKinds are the namespaces a pod's PID 1 may join by path.
var namespaceKinds = map[specs.LinuxNamespaceType]int{
	specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.UserNamespace:    unix.CLONE_NEWUSER,
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

func asNotFound(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	}
	return err
}

// systemdRuns: systemd's own test (sd_booted).
func systemdRuns() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}
