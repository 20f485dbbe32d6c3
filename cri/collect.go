package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/containerd/errdefs"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// collect finishes what a crash left half-done before ketchd serves:
// pods and containers whose create or remove was cut short (their records
// say "creating" or "removing", or an exited container's has no rootfs
// directory left: release) are removed with whatever of them exists, and
// then the state directory is rid of what no record holds. Nothing of a
// pod or container that has a record otherwise is touched.
func (s *Server) collect(ctx context.Context) error {
	var errs []error
	ctrs, err := s.store.ListContainers(store.ContainerFilter{})
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	// An exited container whose rootfs directory is gone was being
	// released: its record goes beside its rootfs (release).
	dirs, dirsErr := s.containers.ContainerDirs()
	hasDir := make(map[string]bool, len(dirs))
	for _, id := range dirs {
		hasDir[id] = true
	}
	for _, c := range ctrs {
		released := dirsErr == nil && c.State == store.ContainerExited && !hasDir[c.ID]
		if c.State == store.ContainerCreating || c.Removing || released {
			slog.Warn("removing a container whose create or remove was cut short", "container", c.ID, "pod", c.SandboxID, "state", c.State)
			errs = append(errs, s.removeContainer(ctx, *c))
		}
	}
	for _, c := range ctrs {
		if c.State == store.ContainerCreated && !c.Removing {
			_, err := s.finishStart(ctx, *c)
			errs = append(errs, err)
		}
	}
	pods, err := s.store.ListSandboxes(store.SandboxFilter{})
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	for _, sb := range pods {
		if sb.State != store.SandboxCreating && !sb.Removing {
			continue
		}
		slog.Warn("removing a pod whose create or remove was cut short", "pod", sb.ID, "state", sb.State)
		if _, err := s.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.ID}); err != nil {
			errs = append(errs, err)
		}
	}
	// What remains is listed once, not looked up a directory each: a node
	// keeps thousands of exited containers, and a record decoded per
	// directory cost a restart 0.8 s at 11,000.
	if pods, err = s.store.ListSandboxes(store.SandboxFilter{}); err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	if ctrs, err = s.store.ListContainers(store.ContainerFilter{}); err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	known := make(map[string]bool, len(pods)+len(ctrs))
	for _, sb := range pods {
		known[sb.ID] = true
	}
	for _, c := range ctrs {
		known[c.ID] = true
	}
	isKnown := func(id string) bool { return known[id] }
	errs = append(errs, s.sandboxes.Collect(ctx, isKnown))
	dirs, err = s.containers.ContainerDirs()
	errs = append(errs, err)
	for _, id := range dirs {
		if known[id] {
			continue
		}
		slog.Warn("removing a container rootfs no record holds", "container", id)
		errs = append(errs, s.releaseRootfs(ctx, id))
	}
	return errors.Join(errs...)
}

// finishStart records the start of container c if its shim started it
// and ketchd died before the record said so (the container watchers
// started after collect then follow it like any other), or its exit if
// the shim died. It returns whether it recorded either.
func (s *Server) finishStart(ctx context.Context, c store.Container) (bool, error) {
	st, err := s.containerState(ctx, &c)
	if errdefs.IsFailedPrecondition(err) || errdefs.IsUnavailable(err) {
		return true, s.shimGone(ctx, c)
	}
	if err != nil || st.StartedAt.IsZero() {
		return false, nil
	}
	slog.Warn("recording the start of a container whose StartContainer was cut short", "container", c.ID, "pod", c.SandboxID, "pid", st.Pid)
	if _, err := s.store.ContainerStarted(c.ID, st.Pid, st.StartedAt); err != nil {
		return false, fmt.Errorf("record start of %s: %w", c.ID, err)
	}
	return true, nil
}

// shimGone ends created container c, whose pod's shim died: it can never
// start, and what a start cut short may have begun must not run on unseen.
func (s *Server) shimGone(ctx context.Context, c store.Container) error {
	if err := s.containers.DeleteContainer(ctx, c.SandboxID, c.ID); err != nil {
		return fmt.Errorf("end container %s of a dead shim: %w", c.ID, err)
	}
	slog.Warn("container exited: its pod's shim died before it started", "container", c.ID, "pod", c.SandboxID)
	if _, _, err := s.store.ContainerExited(c.ID, store.Exit{Code: 255, At: time.Now(),
		Reason: reasonShimDied, Message: "the pod's shim died before the container started"}); err != nil {
		return fmt.Errorf("record exit of %s: %w", c.ID, err)
	}
	return nil
}
