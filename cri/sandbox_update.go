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

// UpdatePodSandboxResources takes a pod's new pod-level resources (an
// in-place resize), checks them and records them for verbose
// PodSandboxStatus. It changes no cgroup: the pod's cgroup, which its
// containers are in, is kubelet's (kubepods/.../pod<uid>), and kubelet
// resizes it itself right after this call; the one ketch keeps for the
// pod holds only its PID 1, and a limit raised there before kubelet raised
// the parent's is refused by the kernel (a child's CFS quota may not exceed
// its parent's).
func (s *Server) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	sb, err := s.findSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("update pod resources: %w", err)
	}
	if sb.State != store.SandboxReady {
		return nil, fmt.Errorf("update resources of pod %s: not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	linux := req.GetResources()
	if linux == nil {
		return nil, fmt.Errorf("update resources of pod %s: no linux resources: %w", sb.ID, errdefs.ErrInvalidArgument)
	}
	if _, err := oci.Resources(linux); err != nil {
		return nil, fmt.Errorf("update resources of pod %s: %w", sb.ID, err)
	}
	raw, err := proto.Marshal(linux)
	if err != nil {
		return nil, err
	}
	if _, err := s.store.UpdateSandbox(sb.ID, func(rec *store.Sandbox) error {
		rec.Resources = raw
		return nil
	}); err != nil {
		return nil, fmt.Errorf("update resources of pod %s: %w", sb.ID, err)
	}
	return &runtimeapi.UpdatePodSandboxResourcesResponse{}, nil
}
