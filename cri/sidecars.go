package cri

import (
	"context"
	"log/slog"
	"time"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci"
)

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
			if err := s.stopContainer(ctx, *sc, s.cfg.Workflow.SidecarGrace); err != nil {
				slog.Warn("stop sidecar", "pod", sb.ID, "container", sc.ID, "err", err)
			}
		}()
	}
}
