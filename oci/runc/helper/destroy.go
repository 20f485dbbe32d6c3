package helper

import (
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
)

// destroyTimeout bounds the wait for a KILLed container's processes to
// go; only one stuck in the kernel (D state) takes longer.
const destroyTimeout = 10 * time.Second

// destroy KILLs container id's processes, waits for them to go, and
// removes its cgroups and libcontainer state. Nothing left is no error.
// It needs only what is on disk: a shim that died (kill -9, OOM) is how
// ketchd comes to call it, the exit codes being in the shim's records.
func destroy(root, id string) error {
	lc, err := libcontainer.Load(root, id)
	if errors.Is(err, libcontainer.ErrNotExist) || errors.Is(err, os.ErrNotExist) {
		return destroyUnstarted(root, id)
	}
	if err != nil {
		return fmt.Errorf("load %s: %w", id, err)
	}
	if err := lc.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		return fmt.Errorf("kill %s: %w", id, err)
	}
	for deadline := time.Now().Add(destroyTimeout); ; time.Sleep(10 * time.Millisecond) {
		st, err := lc.Status()
		if err != nil {
			return fmt.Errorf("status of %s: %w", id, err)
		}
		if st == libcontainer.Stopped {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not die %v after KILL", id, destroyTimeout)
		}
	}
	if err := lc.Destroy(); err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	return nil
}

// configFile holds a container's libcontainer config in its state
// directory, where libcontainer saves its state only once the container
// has started: a start cut short may have made cgroups nothing else
// records, and a created container bind-mounts files (ketch-init) that
// must not be removed under it.
const configFile = "config.json"

func saveConfig(root, id string, cfg *configs.Config) error {
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	// Whole or not at all: a helper killed mid-write must not leave a
	// config that hides the cgroups a start cut short made. (No fsync:
	// cgroups do not outlive the machine.)
	f, err := os.CreateTemp(filepath.Join(root, id), "."+configFile)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(root, id, configFile))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func loadConfig(root, id string) (*configs.Config, error) {
	b, err := os.ReadFile(filepath.Join(root, id, configFile))
	if err != nil {
		return nil, err
	}
	var cfg configs.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", configFile, err)
	}
	if cfg.Cgroups == nil {
		return nil, fmt.Errorf("%s: no cgroup config", configFile)
	}
	if cfg.Cgroups.Resources == nil {
		cfg.Cgroups.Resources = &cgroups.Resources{}
	}
	return &cfg, nil
}

// destroyUnstarted removes what a container that libcontainer never saved
// a state for may have left: processes and cgroups of a start cut short,
// and its state dir.
func destroyUnstarted(root, id string) error {
	cfg, err := loadConfig(root, id)
	if errors.Is(err, os.ErrNotExist) {
		return os.RemoveAll(filepath.Join(root, id))
	}
	if err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
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
