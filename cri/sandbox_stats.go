package cri

import (
	"context"
	"fmt"
	"slices"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/sandbox"
)

// PodSandboxStats reports a running pod's CPU, memory, process and network
// usage. A pod that is not running has none: NotFound, as in containerd.
func (s *Server) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	sb, err := s.findSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("pod sandbox stats: %w", err)
	}
	st, err := s.podStats(ctx, sb)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: st}, nil
}

// ListPodSandboxStats reports the stats of the ready pods the filter
// selects; a pod that stops while the list is made is left out.
func (s *Server) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	items, err := s.listPodSandboxStats(ctx, req.GetFilter())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListPodSandboxStatsResponse{Stats: items}
	return resp, checkListSize(resp, "ListPodSandboxStats", "StreamPodSandboxStats", len(items))
}

// listPodSandboxStats lists the running containers once, not once a pod:
// a workflow node keeps thousands of exited ones.
func (s *Server) listPodSandboxStats(ctx context.Context, f *runtimeapi.PodSandboxStatsFilter) ([]*runtimeapi.PodSandboxStats, error) {
	ready := store.SandboxReady
	pods, err := s.store.ListSandboxes(store.SandboxFilter{ID: f.GetId(), LabelSelector: f.GetLabelSelector(), State: &ready})
	if err != nil {
		return nil, fmt.Errorf("list pod sandbox stats: %w", err)
	}
	running := store.ContainerRunning
	ctrs, err := s.store.ListContainers(store.ContainerFilter{SandboxID: f.GetId(), State: &running})
	if err != nil {
		return nil, fmt.Errorf("list pod sandbox stats: %w", err)
	}
	selected := make(map[string]bool, len(pods))
	for _, sb := range pods {
		selected[sb.ID] = true
	}
	ctrs = slices.DeleteFunc(ctrs, func(c *store.Container) bool { return !selected[c.SandboxID] })
	// Containers before pods, so that a pod's counters, read last, are
	// never below the sum of its containers'.
	cstats, err := s.containerStatsOf(ctx, ctrs)
	if err != nil {
		return nil, err
	}
	cached := func(sb store.Sandbox) *runtimeapi.PodSandboxStats { return s.stats.pod(sb.ID, s.statsMaxAge()) }
	own, err := cachedOr(ctx, pods, cached, podAttrs, s.podOwnStats)
	if err != nil {
		return nil, err
	}
	podOf := make(map[string]string, len(ctrs))
	for _, c := range ctrs {
		podOf[c.ID] = c.SandboxID
	}
	byPod := map[string][]*runtimeapi.ContainerStats{}
	for _, st := range cstats {
		pod := podOf[st.Attributes.Id]
		byPod[pod] = append(byPod[pod], st)
	}
	out := make([]*runtimeapi.PodSandboxStats, len(own))
	for i, ps := range own {
		out[i] = withContainers(ps, byPod[ps.Attributes.Id])
	}
	return out, nil
}

// podStats is pod sb's own figures, read now, and its containers'.
func (s *Server) podStats(ctx context.Context, sb store.Sandbox) (*runtimeapi.PodSandboxStats, error) {
	// kubelet, when it takes every figure from the runtime, finds a pod's
	// containers here. They are read before the pod, so that the pod's
	// counters, read last, are never below the sum of its containers'.
	cstats, err := s.listContainerStats(ctx, &runtimeapi.ContainerStatsFilter{PodSandboxId: sb.ID})
	if err != nil {
		return nil, err
	}
	ps, err := s.podOwnStats(ctx, sb)
	if err != nil {
		return nil, err
	}
	return withContainers(ps, cstats), nil
}

// podOwnStats reads pod sb's own figures now, without its containers', and
// keeps them in the stats cache when there is one.
func (s *Server) podOwnStats(ctx context.Context, sb store.Sandbox) (*runtimeapi.PodSandboxStats, error) {
	spec, err := storedSpec(sb)
	if err != nil {
		return nil, err
	}
	st, err := s.sandboxes.Stats(ctx, spec)
	if err != nil {
		return nil, err
	}
	ps := s.toCRIPodStats(sb, st)
	if s.cfg.StatsPeriod > 0 {
		s.stats.putPod(ps)
	}
	return ps, nil
}

// withContainers is ps with its containers' figures, in a new message:
// ps may be the stats cache's, shared with other calls.
func withContainers(ps *runtimeapi.PodSandboxStats, ctrs []*runtimeapi.ContainerStats) *runtimeapi.PodSandboxStats {
	l := ps.Linux
	return &runtimeapi.PodSandboxStats{
		Attributes: ps.Attributes,
		Linux: &runtimeapi.LinuxPodSandboxStats{
			Cpu: l.Cpu, Memory: l.Memory, Network: l.Network, Process: l.Process, Io: l.Io,
			Containers: ctrs,
		},
	}
}

func (s *Server) toCRIPodStats(sb store.Sandbox, st sandbox.Stats) *runtimeapi.PodSandboxStats {
	ts := st.At.UnixNano()
	linux := &runtimeapi.LinuxPodSandboxStats{
		Cpu:     s.criCPU(sb.ID, st.Stats),
		Memory:  criMemory(st.Stats),
		Process: &runtimeapi.ProcessUsage{Timestamp: ts, ProcessCount: &runtimeapi.UInt64Value{Value: st.Processes()}},
		Io:      &runtimeapi.IoUsage{Timestamp: ts, Psi: criPSI(st.Cgroup.BlkioStats.PSI)},
	}
	if len(st.Interfaces) > 0 {
		linux.Network = &runtimeapi.NetworkUsage{Timestamp: ts}
		for i, n := range st.Interfaces {
			u := &runtimeapi.NetworkInterfaceUsage{
				Name:     n.Name,
				RxBytes:  &runtimeapi.UInt64Value{Value: n.RxBytes},
				RxErrors: &runtimeapi.UInt64Value{Value: n.RxErrors},
				TxBytes:  &runtimeapi.UInt64Value{Value: n.TxBytes},
				TxErrors: &runtimeapi.UInt64Value{Value: n.TxErrors},
			}
			// kubelet's default interface is the one CNI made: eth0.
			if i == 0 || n.Name == "eth0" {
				linux.Network.DefaultInterface = u
			}
			linux.Network.Interfaces = append(linux.Network.Interfaces, u)
		}
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{
			Id:          sb.ID,
			Metadata:    &runtimeapi.PodSandboxMetadata{Name: sb.Name, Namespace: sb.Namespace, Uid: sb.UID, Attempt: sb.Attempt},
			Labels:      sb.Labels,
			Annotations: sb.Annotations,
		},
		Linux: linux,
	}
}
