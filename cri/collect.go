package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// collect finishes what a crash left half-done before ketchd serves:
// pods and containers whose create was cut short (their records say
// "creating") are removed with whatever of them exists, and then the
// state directory is rid of what no record holds. Nothing of a pod or
// container that has a record otherwise is touched.
func (s *Server) collect(ctx context.Context) error {
	var errs []error
	creatingC := store.ContainerCreating
	ctrs, err := s.store.ListContainers(store.ContainerFilter{State: &creatingC})
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	for _, c := range ctrs {
		slog.Warn("removing a container whose create was cut short", "container", c.ID, "pod", c.SandboxID)
		errs = append(errs, s.removeContainer(ctx, c))
	}
	creating := store.SandboxCreating
	pods, err := s.store.ListSandboxes(store.SandboxFilter{State: &creating})
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	for _, sb := range pods {
		slog.Warn("removing a pod whose create was cut short", "pod", sb.ID)
		if _, err := s.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.ID}); err != nil {
			errs = append(errs, err)
		}
	}
	known := func(id string) bool {
		sb, err := s.store.GetSandbox(id)
		return err == nil && sb.ID == id
	}
	errs = append(errs, s.sandboxes.Collect(ctx, known))
	dirs, err := s.containers.ContainerDirs()
	errs = append(errs, err)
	for _, id := range dirs {
		if c, err := s.store.GetContainer(id); err == nil && c.ID == id {
			continue
		}
		slog.Warn("removing a container rootfs no record holds", "container", id)
		errs = append(errs, s.images.Release(ctx, id, s.containers.ContainerRootfs(id)))
	}
	return errors.Join(errs...)
}
