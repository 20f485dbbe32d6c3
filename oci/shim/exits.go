package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
)

const exitsDir = "exits"

// recordExit writes id's exit record so that it survives a crash of the
// shim or the node's power: ketchd may be down when the process dies and
// must still learn its exit code later. A reader sees the old file or the
// new one, never a torn one.
func recordExit(dir, id string, e Exit) error {
	d := filepath.Join(dir, exitsDir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("record exit of %s: %w", id, err)
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("record exit of %s: %w", id, err)
	}
	if err := writeFileSync(d, id, data); err != nil {
		return fmt.Errorf("record exit of %s: %w", id, err)
	}
	return nil
}

func writeFileSync(dir, name string, data []byte) (retErr error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	// The rename itself is durable only once the directory is synced.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadExit returns the exit recorded for container id in the pod directory
// dir. It works without a shim, so ketchd can learn the exits of a pod whose
// shim is gone; errdefs.ErrNotFound means none was recorded.
func ReadExit(dir, id string) (Exit, error) {
	var e Exit
	data, err := os.ReadFile(filepath.Join(dir, exitsDir, id))
	if errors.Is(err, os.ErrNotExist) {
		return e, fmt.Errorf("exit of %s: %w", id, errdefs.ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("exit of %s: %w", id, err)
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("exit of %s: %w: %w", id, errdefs.ErrDataLoss, err)
	}
	return e, nil
}
