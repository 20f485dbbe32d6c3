package shim

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Destroy removes what a shim that died (kill -9, OOM) left of container id
// in the pod directory dir: it KILLs the container's processes, waits for
// them to go, and removes its cgroup and libcontainer state. Nothing left
// is no error. It needs no shim, only libcontainer's state on disk, which
// binary (ketch-shim) reads in a process of its own: ketchd links no
// libcontainer. The exit codes are in the shim's exit records.
func Destroy(ctx context.Context, binary, dir, id string) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, "destroy", "--dir", dir, "--id", id)
	cmd.Dir = "/"
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("destroy %s: %w", id, ctx.Err())
		}
		return fmt.Errorf("destroy %s: %w: %s", id, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
