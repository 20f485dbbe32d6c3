package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
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
			c.State, c.ExitCode, c.Reason, c.Message, c.FinishedAt = store.ContainerExited, 128, "StartError", err.Error(), time.Now()
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

// watchContainer records the container's exit once its shim has, whoever
// ended it, so status and lists tell the truth without asking the shim.
func (s *Server) watchContainer(podID, id string) {
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		e, err := s.containers.WaitContainer(s.bg, podID, id)
		if s.bg.Err() != nil {
			return // ketchd is stopping; the next one watches again
		}
		s.recordExit(podID, id, e, err)
	}()
}

// recordExit writes an exit the shim reported (or the loss of the shim)
// into the record of a container that was running; it is idempotent, as
// StopContainer and the watcher both call it.
func (s *Server) recordExit(podID, id string, e shim.Exit, waitErr error) {
	reason, msg := exitReason(e), ""
	if waitErr != nil {
		if !errors.Is(waitErr, sandbox.ErrShimGone) {
			slog.Warn("wait for container", "container", id, "err", waitErr)
		}
		e = shim.Exit{Code: 255, At: time.Now()}
		reason, msg = "ShimDied", "the pod's shim died before the container's exit was recorded: "+waitErr.Error()
	}
	changed := false
	rec, err := s.store.UpdateContainer(id, func(c *store.Container) error {
		if c.State != store.ContainerRunning {
			return nil
		}
		changed = true
		c.State, c.ExitCode, c.FinishedAt, c.Reason, c.Message = store.ContainerExited, int32(e.Code), e.At, reason, msg
		if c.WantResult {
			c.Result, c.ResultTruncated = e.Result, e.Truncated
			c.Message = resultMessage(e.Result)
		}
		return nil
	})
	if err != nil && !errdefs.IsNotFound(err) {
		slog.Error("record container exit", "container", id, "err", err)
	}
	if changed {
		metrics.ContainerExits.WithLabelValues(reason).Inc()
		if rec.WantResult {
			metrics.Results.WithLabelValues(strconv.FormatBool(rec.ResultTruncated)).Inc()
		}
		s.emit(podID, id, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
		s.stopSidecarsOf(rec)
	}
}

// exitReason is kubelet's reason for an exit: OOMKilled from the cgroup's
// own count, else Completed or Error by the exit code.
func exitReason(e shim.Exit) string {
	switch {
	case e.OOMKilled:
		return "OOMKilled"
	case e.Code == 0:
		return "Completed"
	}
	return "Error"
}

// maxMessage is what kubelet keeps of a termination message.
const maxMessage = 4 << 10

// resultMessage is a result as ContainerStatus.message carries it, where
// kubelet copies it into the pod's terminated state: one trailing newline
// trimmed (as Argo's wait container does), at most 4 KiB, valid UTF-8.
func resultMessage(b []byte) string {
	b = bytes.TrimSuffix(b, []byte("\n"))
	if len(b) > maxMessage {
		b = b[:maxMessage]
		// Do not split a character: drop an incomplete last rune.
		for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.Valid(b); i++ {
			b = b[:len(b)-1]
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// stopSidecarsOf stops the other running containers of c's pod (or those
// ketch.dev/sidecars lists) when c is the container the pod's ketch.dev/main
// annotation names (Argo's KillSidecars): their stop signal, KILL after the
// sidecar grace, so a sidecar that ignores TERM cannot keep the step alive.
func (s *Server) stopSidecarsOf(c store.Container) {
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil || sb.Annotations[oci.AnnotationMain] != c.Name || c.Name == "" {
		return
	}
	running := store.ContainerRunning
	sidecars, err := s.store.ListContainers(store.ContainerFilter{SandboxID: sb.ID, State: &running})
	if err != nil {
		slog.Warn("list sidecars", "pod", sb.ID, "err", err)
		return
	}
	for _, sc := range sidecars {
		if !oci.IsSidecar(sb.Annotations, sc.Name) {
			continue
		}
		s.watchers.Add(1)
		go func() {
			defer s.watchers.Done()
			slog.Info("main container exited: stopping sidecar", "pod", sb.ID, "main", c.ID, "container", sc.ID)
			ctx, cancel := context.WithTimeout(s.bg, s.cfg.Workflow.SidecarGrace+time.Minute)
			defer cancel()
			if err := s.stopContainer(ctx, sc, s.cfg.Workflow.SidecarGrace); err != nil {
				slog.Warn("stop sidecar", "pod", sb.ID, "container", sc.ID, "err", err)
			}
		}()
	}
}

// watchRunningContainers watches every container a previous ketchd left
// running.
func (s *Server) watchRunningContainers() error {
	running := store.ContainerRunning
	ctrs, err := s.store.ListContainers(store.ContainerFilter{State: &running})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range ctrs {
		s.watchContainer(c.SandboxID, c.ID)
	}
	return nil
}

// findContainer looks a container up by ID or unique ID prefix.
func (s *Server) findContainer(idOrPrefix string) (store.Container, error) {
	if idOrPrefix == "" {
		return store.Container{}, fmt.Errorf("container ID is empty: %w", errdefs.ErrInvalidArgument)
	}
	return s.store.GetContainer(idOrPrefix)
}
