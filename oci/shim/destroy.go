package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

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
		return nil
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
