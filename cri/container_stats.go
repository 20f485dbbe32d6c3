package cri

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
)

// ContainerStats reports a running container's CPU, memory and writable
// layer usage. One that does not run has none: NotFound, as in containerd.
func (s *Server) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("container stats: %w", err)
	}
	if c.State != store.ContainerRunning {
		return nil, fmt.Errorf("container stats %s: it is %s: %w", c.ID, c.State, errdefs.ErrNotFound)
	}
	st, err := s.containerStats(ctx, c)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: st}, nil
}

// ListContainerStats reports the stats of the running containers the
// filter selects; one that stops while the list is made is left out.
func (s *Server) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	items, err := s.listContainerStats(ctx, req.GetFilter())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListContainerStatsResponse{Stats: items}
	return resp, checkListSize(resp, "ListContainerStats", "StreamContainerStats", len(items))
}

func (s *Server) listContainerStats(ctx context.Context, f *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
	running := store.ContainerRunning
	ctrs, err := s.store.ListContainers(store.ContainerFilter{
		ID: f.GetId(), SandboxID: f.GetPodSandboxId(), LabelSelector: f.GetLabelSelector(), State: &running,
	})
	if err != nil {
		return nil, fmt.Errorf("list container stats: %w", err)
	}
	var items []*runtimeapi.ContainerStats
	for _, c := range ctrs {
		st, err := s.containerStats(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			slog.Debug("no stats for container", "container", c.ID, "err", err)
			continue
		}
		items = append(items, st)
	}
	return items, nil
}

func (s *Server) containerStats(ctx context.Context, c store.Container) (*runtimeapi.ContainerStats, error) {
	st, err := s.containers.ContainerStats(ctx, c.SandboxID, c.ID)
	if err != nil {
		return nil, fmt.Errorf("stats of container %s: %w", c.ID, err)
	}
	bytes, inodes, err := s.images.WritableUsage(ctx, c.ID)
	if err != nil {
		return nil, fmt.Errorf("stats of container %s: %w", c.ID, err)
	}
	ts := st.At.UnixNano()
	return &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{
			Id:          c.ID,
			Metadata:    &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
			Labels:      c.Labels,
			Annotations: c.Annotations,
		},
		Cpu:    criCPU(st),
		Memory: criMemory(st),
		WritableLayer: &runtimeapi.FilesystemUsage{
			Timestamp:  ts,
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: s.cfg.ImageRoot},
			UsedBytes:  &runtimeapi.UInt64Value{Value: bytes},
			InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
		},
	}, nil
}

// criCPU and criMemory are a cgroup's figures as the CRI reports them.
func criCPU(st shim.Stats) *runtimeapi.CpuUsage {
	return &runtimeapi.CpuUsage{Timestamp: st.At.UnixNano(), UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: st.CPUUsageNanos}}
}

func criMemory(st shim.Stats) *runtimeapi.MemoryUsage {
	return &runtimeapi.MemoryUsage{
		Timestamp:       st.At.UnixNano(),
		WorkingSetBytes: &runtimeapi.UInt64Value{Value: st.MemoryWorkingSet},
		UsageBytes:      &runtimeapi.UInt64Value{Value: st.MemoryUsage},
		RssBytes:        &runtimeapi.UInt64Value{Value: st.MemoryRSS},
		PageFaults:      &runtimeapi.UInt64Value{Value: st.PageFaults},
		MajorPageFaults: &runtimeapi.UInt64Value{Value: st.MajorPageFaults},
	}
}
