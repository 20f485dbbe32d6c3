package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
)

// ExitsDir, in a pod's directory, holds each container's exit record,
// written by the shim before it reports the exit.
const ExitsDir = "exits"

// ReadExit returns the exit recorded for container id in the pod directory
// dir. It works without a shim, so ketchd can learn the exits of a pod whose
// shim is gone; errdefs.ErrNotFound means none was recorded.
func ReadExit(dir, id string) (Exit, error) {
	var e Exit
	data, err := os.ReadFile(filepath.Join(dir, ExitsDir, id))
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
