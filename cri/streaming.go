package cri

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
)

// Exec hands out the URL of an exec session in a running container.
func (s *Server) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	if c.State != store.ContainerRunning {
		return nil, fmt.Errorf("exec in %s: it is %s: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	if len(req.GetCmd()) == 0 {
		return nil, fmt.Errorf("exec in %s: empty command: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	return s.stream.GetExec(req)
}

// Attach hands out the URL of an attach session to a running container.
func (s *Server) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	if c.State != store.ContainerRunning {
		return nil, fmt.Errorf("attach to %s: it is %s: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	return s.stream.GetAttach(req)
}

// PortForward hands out the URL of a port-forward session to a ready pod.
func (s *Server) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	sb, err := s.findSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("port-forward: %w", err)
	}
	if sb.State != store.SandboxReady {
		return nil, fmt.Errorf("port-forward to %s: the pod is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	return s.stream.GetPortForward(req)
}

// sessionRuntime runs the sessions the streaming server serves
// (streaming.Runtime), in the containers and pods the store knows.
type sessionRuntime struct{ s *Server }

func (r sessionRuntime) Exec(ctx context.Context, id string, cmd []string, st shim.Streams) (int, error) {
	c, err := r.s.findContainer(id)
	if err != nil {
		return 0, err
	}
	sh, err := r.s.containers.Shim(ctx, c.SandboxID)
	if err != nil {
		return 0, err
	}
	return sh.Exec(ctx, c.ID, cmd, st)
}

func (r sessionRuntime) Attach(ctx context.Context, id string, st shim.Streams) (int, error) {
	c, err := r.s.findContainer(id)
	if err != nil {
		return 0, err
	}
	sh, err := r.s.containers.Shim(ctx, c.SandboxID)
	if err != nil {
		return 0, err
	}
	return sh.Attach(ctx, c.ID, st)
}

func (r sessionRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	sb, err := r.s.findSandbox(podID)
	if err != nil {
		return err
	}
	spec, err := storedSpec(sb)
	if err != nil {
		return err
	}
	return r.s.sandboxes.PortForward(ctx, spec, port, stream)
}
