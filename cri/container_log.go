package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// ReopenContainerLog reopens a running container's log after kubelet
// rotated it; a container that does not run has no log to reopen, and no
// file is created for it.
func (s *Server) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("reopen container log: %w", err)
	}
	if c.State != store.ContainerRunning {
		return nil, fmt.Errorf("reopen log of container %s: it is %s: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	sh, err := s.containers.Shim(ctx, c.SandboxID)
	if err == nil {
		err = sh.ReopenLog(ctx, c.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("reopen log of container %s: %w", c.ID, err)
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
