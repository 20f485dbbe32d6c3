package server

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"ketch.dev/ketch/oci/shim"
)

// recordExit writes id's exit record so that it survives a crash of the
// shim or the node's power: ketchd may be down when the process dies and
// must still learn its exit code later. A reader sees the old file or the
// new one, never a torn one.
func recordExit(dir, id string, e shim.Exit) error {
	d := filepath.Join(dir, shim.ExitsDir)
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

func exitFromWaitStatus(ws syscall.WaitStatus, at time.Time) shim.Exit {
	if ws.Signaled() {
		return shim.Exit{Code: 128 + int(ws.Signal()), Signal: ws.Signal(), At: at}
	}
	return shim.Exit{Code: ws.ExitStatus(), At: at}
}
