package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"ketch.dev/ketch/oci"
)

const (
	runtimeName = "ketch"
	// apiVersion is the CRI API version ketch serves.
	apiVersion = "v1"
)

// Version answers kubelet's first call: who is the runtime.
func (s *Server) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           "0.1.0", // the kubelet runtime API version, by CRI convention
		RuntimeName:       runtimeName,
		RuntimeVersion:    s.cfg.Version,
		RuntimeApiVersion: apiVersion,
	}, nil
}

// Status reports RuntimeReady and NetworkReady; kubelet marks the node
// NotReady while NetworkReady is false.
func (s *Server) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	network := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if err := s.network.Ready(); err != nil {
		network.Status = false
		network.Reason = "NetworkPluginNotReady"
		network.Message = err.Error()
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
			{Type: runtimeapi.RuntimeReady, Status: true},
			network,
		}},
		Features: &runtimeapi.RuntimeFeatures{
			SupplementalGroupsPolicy:  true,
			MountOptions:              true, // Mount.mount_options: nosuid, nodev, noexec, ...
			UserNamespacesHostNetwork: s.cfg.UserNamespaces,
		},
	}
	// Every handler is the same runtime; kubelet and critest look features
	// up by handler name, the default one being "".
	for _, name := range append([]string{""}, s.cfg.RuntimeHandlers...) {
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{
			Name: name,
			Features: &runtimeapi.RuntimeHandlerFeatures{
				RecursiveReadOnlyMounts: s.cfg.RecursiveReadOnlyMounts,
				UserNamespaces:          s.cfg.UserNamespaces,
			},
		})
	}
	if req.GetVerbose() {
		cidrs, err := s.network.PodCIDRs()
		if err != nil {
			return nil, err
		}
		// The keys are containerd's: critest finds where the runtime keeps
		// its state (to probe idmapped mounts there) under "config".
		info, err := json.Marshal(map[string]any{"stateDir": s.cfg.StateDir, "rootDir": s.cfg.RootDir, "podCIDRs": cidrs})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"config": string(info)}
	}
	return resp, nil
}

// UpdateRuntimeConfig takes the pod CIDRs kubelet learns from its Node
// (node.spec.podCIDRs, comma-separated) at start and on every change; kubelet
// retries every node status sync while it fails.
func (s *Server) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	var cidrs []string
	for _, c := range strings.Split(req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr(), ",") {
		if c = strings.TrimSpace(c); c != "" {
			cidrs = append(cidrs, c)
		}
	}
	if err := s.network.SetPodCIDRs(cidrs); err != nil {
		return nil, fmt.Errorf("update runtime config: %w", err)
	}
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}

// RuntimeConfig tells kubelet which cgroup driver to use, so the two agree.
func (s *Server) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	driver := runtimeapi.CgroupDriver_CGROUPFS
	if s.cfg.CgroupDriver == oci.CgroupDriverSystemd {
		driver = runtimeapi.CgroupDriver_SYSTEMD
	}
	return &runtimeapi.RuntimeConfigResponse{
		Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: driver},
	}, nil
}
