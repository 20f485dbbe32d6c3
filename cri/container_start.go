package cri

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
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
	sh, err := s.containers.Shim(ctx, c.SandboxID)
	var st shim.Started
	if err == nil {
		st, err = sh.StartContainer(ctx, c.ID)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("start container %s: %w", c.ID, err), s.startFailed(c, err))
	}
	if _, err := s.store.ContainerStarted(c.ID, st.Pid, st.At); err != nil {
		return nil, fmt.Errorf("start container %s: %w", c.ID, err)
	}
	s.watchContainer(c.SandboxID, c.ID, st.Pid)
	return &runtimeapi.StartContainerResponse{}, nil
}

// startFailed records what a start that failed with err left. The shim
// may have started the container all the same, the call cut short (its
// client went away, or the connection), or died under it: the shim's
// state says which, as after a crash (finishStart). Only a start the
// shim did not make is a StartError; a process never runs on behind an
// EXITED record.
func (s *Server) startFailed(c store.Container, err error) error {
	ctx, cancel := context.WithTimeout(s.bg, startCheckTimeout)
	defer cancel()
	if done, ferr := s.finishStart(ctx, c); done || ferr != nil {
		if rec, gerr := s.store.GetContainer(c.ID); gerr == nil && rec.State == store.ContainerRunning {
			s.watchContainer(c.SandboxID, c.ID, rec.PID)
		}
		return ferr
	}
	rec, changed, uerr := s.store.ContainerExited(c.ID, store.Exit{Code: 128, At: time.Now(), Reason: reasonStartError, Message: err.Error()})
	if changed {
		// A main container that cannot start has ended its step as
		// surely as one that exited.
		s.stopSidecarsOf(rec)
	}
	return uerr
}

// startCheckTimeout bounds startFailed's question to the shim.
const startCheckTimeout = 30 * time.Second

// maxMessage is what kubelet keeps of a termination message.
const maxMessage = 4 << 10
