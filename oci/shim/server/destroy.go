package server

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
	"github.com/opencontainers/runc/libcontainer/configs"
	"ketch.dev/ketch/oci/shim"
)

// Destroy removes what a shim that died (kill -9, OOM) left of container id
// in the pod directory dir: it KILLs the container's processes, waits for
// them to go, and removes its cgroup and libcontainer state. Nothing left
// is no error. It needs no shim: libcontainer's state on disk is enough to
// find the processes, though not their exit codes (the shim's exit records
// keep those).
func Destroy(ctx context.Context, dir, id string) error {
	lc, err := libcontainer.Load(filepath.Join(dir, shim.StateDir), id)
	if errors.Is(err, libcontainer.ErrNotExist) || errors.Is(err, os.ErrNotExist) {
		return destroyUnstarted(filepath.Join(dir, shim.StateDir), id)
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

// configFile holds a container's libcontainer config beside libcontainer's
// state, which it saves only once the container has started: a shim
// killed half-way through a start may have made cgroups nothing else
// records, and a created container bind-mounts files (ketch-init) that
// must not be removed under it.
const configFile = "config.json"

func saveConfig(root, id string, cfg *configs.Config) error {
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	// Whole or not at all: a crash mid-write must not leave a config that
	// hides the cgroups a start cut short made.
	return writeFileSync(filepath.Join(root, id), configFile, b)
}

// destroyUnstarted removes what a container that libcontainer never saved
// a state for may have left: processes and cgroups of a start cut short,
// and its state dir.
func destroyUnstarted(root, id string) error {
	b, err := os.ReadFile(filepath.Join(root, id, configFile))
	if errors.Is(err, os.ErrNotExist) {
		return os.RemoveAll(filepath.Join(root, id))
	}
	if err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	var cfg configs.Config
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.Cgroups == nil {
		return fmt.Errorf("destroy %s: %s: no cgroup config (%v)", id, configFile, err)
	}
	if cfg.Cgroups.Resources == nil {
		cfg.Cgroups.Resources = &cgroups.Resources{}
	}
	cm, err := manager.New(cfg.Cgroups)
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
