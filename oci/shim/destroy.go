package shim

import (
	"context"
	"path/filepath"

	"ketch.dev/ketch/oci/runc"
)

// Destroy removes what a shim that died (kill -9, OOM) left of container id
// in the pod directory dir: it KILLs the container's processes, waits for
// them to go, and removes its cgroup and libcontainer state. Nothing left
// is no error. It needs no shim, only libcontainer's state on disk, which
// ketch-runc (beside shimBinary) reads in a process of its own: ketchd
// links no libcontainer. The exit codes are in the shim's exit records.
func Destroy(ctx context.Context, shimBinary, dir, id string) error {
	return runc.Helper{Binary: runc.Beside(shimBinary), Root: filepath.Join(dir, StateDir)}.Destroy(ctx, id)
}
