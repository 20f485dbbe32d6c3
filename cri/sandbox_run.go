package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// RunPodSandbox records the pod (reserving its name), then has the sandbox
// manager start it. The record says "creating" until the pod runs, so a
// crash in between leaves a record a restart can undo; a failure removes
// the record after the manager has undone its steps.
func (s *Server) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	if err := s.checkPodConfig(cfg, req.GetRuntimeHandler()); err != nil {
		return nil, fmt.Errorf("run pod sandbox: %w", err)
	}
	raw, err := proto.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("run pod sandbox: %w", err)
	}
	id := newID()
	md := cfg.GetMetadata()
	rec := store.Sandbox{
		ID:             id,
		Name:           md.GetName(),
		Namespace:      md.GetNamespace(),
		UID:            md.GetUid(),
		Attempt:        md.GetAttempt(),
		Key:            sandboxKey(md),
		State:          store.SandboxCreating,
		CreatedAt:      time.Now(),
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: req.GetRuntimeHandler(),
		LogDirectory:   cfg.GetLogDirectory(),
		Config:         raw,
	}
	if err := s.store.CreateSandbox(rec); err != nil {
		return nil, fmt.Errorf("run pod sandbox %s: %w", rec.Key, err)
	}
	pod, err := s.sandboxes.Run(ctx, podSpec(id, cfg))
	if err != nil {
		if derr := s.store.DeleteSandbox(id); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, fmt.Errorf("run pod sandbox %s: %w", rec.Key, err)
	}
	ips := make([]string, len(pod.IPs))
	for i, ip := range pod.IPs {
		ips[i] = ip.String()
	}
	if err := s.store.SandboxReady(id, pod.PID, pod.NetNSPath, ips); err != nil {
		return nil, fmt.Errorf("run pod sandbox %s: %w", id, err)
	}
	s.watchSandbox(id, pod.PID)
	slog.Info("pod running", "pod", id, "name", rec.Key, "pid", pod.PID, "ips", pod.IPs)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

// markNotReady makes pod id NOTREADY in the store (store.SandboxNotReady)
// and reports whether it was READY.
func (s *Server) markNotReady(id string, removing bool) (bool, error) {
	wasReady, err := s.store.SandboxNotReady(id, removing)
	if err != nil && !errdefs.IsNotFound(err) {
		slog.Warn("mark pod not ready", "pod", id, "err", err)
	}
	return wasReady, err
}
