package cri

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// StartContainer runs a created container. One whose program cannot start
// is EXITED with reason StartError and exit code 128, as containerd
// reports it, and the error says why.
func (s *Server) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	if c.State != store.ContainerCreated {
		return nil, fmt.Errorf("start container %s: it is %s, not created: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	st, err := s.containers.StartContainer(ctx, c.SandboxID, c.ID)
	if err != nil {
		_, uerr := s.store.UpdateContainer(c.ID, func(c *store.Container) error {
			c.State, c.ExitCode, c.Reason, c.Message, c.FinishedAt = store.ContainerExited, 128, reasonStartError, err.Error(), time.Now()
			return nil
		})
		if uerr == nil {
			s.emit(c.SandboxID, c.ID, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
		}
		return nil, errors.Join(fmt.Errorf("start container %s: %w", c.ID, err), uerr)
	}
	if _, err := s.store.UpdateContainer(c.ID, func(c *store.Container) error {
		c.State, c.StartedAt, c.PID = store.ContainerRunning, st.At, st.Pid
		return nil
	}); err != nil {
		return nil, fmt.Errorf("start container %s: %w", c.ID, err)
	}
	s.watchContainer(c.SandboxID, c.ID)
	s.emit(c.SandboxID, c.ID, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	return &runtimeapi.StartContainerResponse{}, nil
}

// maxMessage is what kubelet keeps of a termination message.
const maxMessage = 4 << 10
