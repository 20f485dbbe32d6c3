package cri

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// ExecSync runs a command in a running container and returns its output
// and exit code. A command still running at the timeout is killed, and the
// call answers DeadlineExceeded, which kubelet's probes read as a timeout.
func (s *Server) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	if len(req.GetCmd()) == 0 {
		return nil, fmt.Errorf("exec in %s: empty command: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	if c.State != store.ContainerRunning {
		return nil, fmt.Errorf("exec in %s: it is %s: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	timeout := time.Duration(req.GetTimeout()) * time.Second
	sh, err := s.containers.Shim(ctx, c.SandboxID)
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.ID, err)
	}
	res, err := sh.ExecSync(ctx, c.ID, req.GetCmd(), timeout)
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.ID, err)
	}
	if res.TimedOut {
		return nil, fmt.Errorf("exec in %s: command %q timed out after %v: %w", c.ID, req.GetCmd(), timeout, context.DeadlineExceeded)
	}
	return &runtimeapi.ExecSyncResponse{Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: int32(res.ExitCode)}, nil
}
