package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci"
)

// UpdateContainerResources applies new limits to a running container's
// cgroup (kubelet's in-place resize) and keeps them in its record, so its
// status reports what applies now.
func (s *Server) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("update container resources: %w", err)
	}
	if req.GetLinux() == nil {
		return nil, fmt.Errorf("update container %s: no linux resources: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	if c.State != store.ContainerRunning {
		return nil, fmt.Errorf("update container %s: it is %s: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	r, err := oci.Resources(req.GetLinux())
	if err != nil {
		return nil, fmt.Errorf("update container %s: %w", c.ID, err)
	}
	sh, err := s.containers.Shim(ctx, c.SandboxID)
	if err == nil {
		err = sh.Update(ctx, c.ID, r)
	}
	if err != nil {
		return nil, fmt.Errorf("update container %s: %w", c.ID, err)
	}
	_, err = s.store.UpdateContainer(c.ID, func(c *store.Container) error {
		var cfg runtimeapi.ContainerConfig
		if err := proto.Unmarshal(c.Config, &cfg); err != nil {
			return err
		}
		if cfg.Linux == nil {
			cfg.Linux = &runtimeapi.LinuxContainerConfig{}
		}
		cfg.Linux.Resources = req.GetLinux()
		raw, err := proto.Marshal(&cfg)
		c.Config = raw
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update container %s: %w", c.ID, err)
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}
