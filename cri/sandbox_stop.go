package cri

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"golang.org/x/sync/errgroup"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// StopPodSandbox ends the pod's processes and frees its network; the record
// stays, NOTREADY, until RemovePodSandbox. Stopping a stopped or unknown
// pod succeeds: kubelet retries stops, and a pod removed meanwhile is as
// stopped as it gets.
func (s *Server) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	sb, err := s.findSandbox(req.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stop pod sandbox: %w", err)
	}
	spec, err := storedSpec(sb)
	if err != nil {
		return nil, err
	}
	// First, so that no container can be created in it from now on; then
	// the creates under way are waited for.
	_, _ = s.markNotReady(sb.ID, false)
	defer s.creates.enter(sb.ID, true)()
	ctrs, err := s.store.ListContainers(store.ContainerFilter{SandboxID: sb.ID})
	if err != nil {
		return nil, fmt.Errorf("stop pod sandbox %s: %w", sb.ID, err)
	}
	// The CRI asks for the containers to be ended forcibly: no grace.
	for _, c := range ctrs {
		if err := s.stopContainer(ctx, *c, 0); err != nil {
			return nil, fmt.Errorf("stop pod sandbox %s: container %s: %w", sb.ID, c.ID, err)
		}
	}
	if err := s.sandboxes.Stop(ctx, spec); err != nil {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// removeParallel is how many of a pod's containers RemovePodSandbox
// removes at once.
const removeParallel = 8

// RemovePodSandbox removes the pod and everything it holds, stopping it
// first if needed. Removing an unknown pod succeeds, as kubelet expects.
func (s *Server) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	sb, err := s.findSandbox(req.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remove pod sandbox: %w", err)
	}
	spec, err := storedSpec(sb)
	if err != nil {
		return nil, err
	}
	// First, so that no container can be created in it from now on and a
	// restart finishes the removal.
	_, err = s.markNotReady(sb.ID, true)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	} else if err != nil {
		return nil, fmt.Errorf("remove pod sandbox %s: %w", sb.ID, err)
	}
	defer s.creates.enter(sb.ID, true)()
	ctrs, err := s.store.ListContainers(store.ContainerFilter{SandboxID: sb.ID})
	if err != nil {
		return nil, fmt.Errorf("remove pod sandbox %s: %w", sb.ID, err)
	}
	// Several at a time: a workflow pod may hold a thousand exited steps,
	// and one by one they would outlast kubelet's 2-minute deadline.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(removeParallel)
	for _, c := range ctrs {
		g.Go(func() error {
			if err := s.removeContainer(gctx, *c); err != nil {
				return fmt.Errorf("remove pod sandbox %s: container %s: %w", sb.ID, c.ID, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := s.sandboxes.Remove(ctx, spec); err != nil {
		return nil, err
	}
	if err := s.store.DeleteSandbox(sb.ID); err != nil {
		return nil, fmt.Errorf("remove pod sandbox %s: %w", sb.ID, err)
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}
