package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
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
	return &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
			{Type: runtimeapi.RuntimeReady, Status: true},
			network,
		}},
	}, nil
}

// RuntimeConfig tells kubelet which cgroup driver to use, so the two agree.
func (s *Server) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return &runtimeapi.RuntimeConfigResponse{
		Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: s.cfg.CgroupDriver},
	}, nil
}
