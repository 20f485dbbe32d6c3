package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
)

// Destroy removes what a shim that died (kill -9, OOM) left of container id
// in the pod directory dir: it KILLs the container's processes, waits for
// them to go, and removes its cgroup and libcontainer state. Nothing left
// is no error. It needs no shim: libcontainer's state on disk is enough to
// find the processes, though not their exit codes (the shim's exit records
// keep those).
func Destroy(ctx context.Context, dir, id string) error {
	lc, err := libcontainer.Load(filepath.Join(dir, stateDir), id)
	if errors.Is(err, libcontainer.ErrNotExist) || errors.Is(err, os.ErrNotExist) {
		return destroyUnstarted(filepath.Join(dir, stateDir), id)
	}
	if err != nil {
		return fmt.Errorf("load %s: %w", id, err)
	}
	if err := lc.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		return fmt.Errorf("kill %s: %w", id, err)
	}
	for {
		st, err := lc.Status()
		if err != nil {
			return fmt.Errorf("status of %s: %w", id, err)
		}
		if st == libcontainer.Stopped {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to die: %w", id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := lc.Destroy(); err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	return nil
}

// cgroupFile holds a container's cgroup config beside libcontainer's state
// dir, which has no state of its own until the container starts: a shim
// killed half-way through a start may have made cgroups nothing else
// records.
const cgroupFile = "cgroup.json"

func saveCgroup(root, id string, cg *cgroups.Cgroup) error {
	b, err := json.Marshal(cg)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, id, cgroupFile), b, 0o600)
}

// destroyUnstarted removes what a container that libcontainer never saved
// a state for may have left: processes and cgroups of a start cut short,
// and its state dir.
func destroyUnstarted(root, id string) error {
	b, err := os.ReadFile(filepath.Join(root, id, cgroupFile))
	if errors.Is(err, os.ErrNotExist) {
		return os.RemoveAll(filepath.Join(root, id))
	}
	if err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	var cg cgroups.Cgroup
	if err := json.Unmarshal(b, &cg); err != nil {
		return fmt.Errorf("destroy %s: %s: %w", id, cgroupFile, err)
	}
	if cg.Resources == nil {
		cg.Resources = &cgroups.Resources{}
	}
	cm, err := manager.New(&cg)
	if err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	if pids, err := cm.GetAllPids(); err == nil {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := cm.Destroy(); err != nil {
		return fmt.Errorf("destroy %s: cgroup: %w", id, err)
	}
	return os.RemoveAll(filepath.Join(root, id))
}
