package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox/netns"
)

// Collect removes what belongs to no pod the caller knows (known is asked
// with each pod ID found): pod directories a crash left in the middle of a
// create or remove, with their shim, processes, cgroups, network and
// mounts, and netns pins without a pod. Each removal is logged; a pod the
// caller knows is never touched.
func (m *Manager) Collect(ctx context.Context, known func(id string) bool) error {
	var errs []error
	pods, err := os.ReadDir(filepath.Join(m.o.StateDir, "pods"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("collect pods: %w", err)
	}
	for _, e := range pods {
		id := e.Name()
		if known(id) || !shim.ValidID(id) {
			continue
		}
		slog.Warn("removing a pod no record holds (left by a crash)", "pod", id)
		// Without a shim, only what libcontainer recorded finds the pod's
		// containers' processes and cgroups.
		ctrs, _ := os.ReadDir(filepath.Join(m.podDir(id), shim.StateDir))
		for _, c := range ctrs {
			if c.Name() != id {
				errs = append(errs, shim.Destroy(ctx, m.o.ShimBinary, m.podDir(id), c.Name()))
			}
		}
		errs = append(errs, m.Remove(ctx, Spec{ID: id}))
	}
	pins, err := os.ReadDir(m.netnsDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return errors.Join(append(errs, fmt.Errorf("collect netns pins: %w", err))...)
	}
	for _, e := range pins {
		if known(e.Name()) { // a teardown stand-in (<id>.teardown) never is
			continue
		}
		slog.Warn("removing a netns pin no pod holds", "netns", e.Name())
		errs = append(errs, netns.Remove(filepath.Join(m.netnsDir(), e.Name())))
	}
	return errors.Join(append(errs, m.pool.collect(), m.collectRootfs())...)
}

// collectRootfs removes the sandbox rootfs dirs older ketch-inits
// installed once nothing uses them. Pods run from one and init-mode
// containers bind-mount its ketch-init; the libcontainer state of a started
// one, and the spec the shim keeps of a created one, name that path.
func (m *Manager) collectRootfs() error {
	dirs, err := filepath.Glob(filepath.Join(filepath.Dir(m.rootfs), "rootfs-*"))
	if err != nil {
		return err
	}
	old := slices.DeleteFunc(dirs, func(d string) bool { return d == m.rootfs })
	if len(old) == 0 {
		return nil
	}
	users, err := filepath.Glob(filepath.Join(m.o.StateDir, "pods", "*", shim.StateDir, "*", "*.json"))
	if err != nil {
		return err
	}
	for _, f := range users {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("collect sandbox rootfs: %w", err) // cannot tell: keep them all
		}
		old = slices.DeleteFunc(old, func(d string) bool { return bytes.Contains(b, []byte(d)) })
	}
	var errs []error
	for _, d := range old {
		slog.Info("removing a sandbox rootfs no pod or container uses", "rootfs", d)
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}

// ContainerDirs lists the container rootfs directories in the state
// directory, by container ID, for the caller to match against its records.
func (m *Manager) ContainerDirs() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(m.o.StateDir, "containers"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var ids []string
	for _, e := range ents {
		ids = append(ids, e.Name())
	}
	return ids, err
}
