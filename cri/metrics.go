package cri

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

// The label keys are cAdvisor's, which kubelet's CRI metrics collector
// keeps so that dashboards built on cAdvisor's names keep working.
var (
	containerLabels = []string{"container", "id", "image", "name", "namespace", "pod"}
	networkLabels   = append(append([]string(nil), containerLabels...), "interface")
)

// metricDef is one metric ketch serves: its descriptor, and how to read
// it from a container's cgroup figures (container metrics) or a pod's
// interface counters (network metrics).
type metricDef struct {
	desc      *runtimeapi.MetricDescriptor
	kind      runtimeapi.MetricType
	container func(shim.Stats) uint64
	network   func(sandbox.Interface) uint64
}

var metricDefs = []metricDef{
	{desc: &runtimeapi.MetricDescriptor{Name: "container_cpu_usage_seconds_total", Help: "Cumulative cpu time consumed in seconds.", LabelKeys: containerLabels},
		kind: runtimeapi.MetricType_COUNTER, container: func(s shim.Stats) uint64 { return s.CPUUsageNanos / uint64(time.Second) }},
	{desc: &runtimeapi.MetricDescriptor{Name: "container_memory_usage_bytes", Help: "Current memory usage in bytes, including all memory regardless of when it was accessed.", LabelKeys: containerLabels},
		kind: runtimeapi.MetricType_GAUGE, container: func(s shim.Stats) uint64 { return s.MemoryUsage }},
	{desc: &runtimeapi.MetricDescriptor{Name: "container_memory_working_set_bytes", Help: "Current working set in bytes.", LabelKeys: containerLabels},
		kind: runtimeapi.MetricType_GAUGE, container: func(s shim.Stats) uint64 { return s.MemoryWorkingSet }},
	{desc: &runtimeapi.MetricDescriptor{Name: "container_memory_rss", Help: "Size of RSS in bytes.", LabelKeys: containerLabels},
		kind: runtimeapi.MetricType_GAUGE, container: func(s shim.Stats) uint64 { return s.MemoryRSS }},
	{desc: &runtimeapi.MetricDescriptor{Name: "container_processes", Help: "Number of processes running inside the container.", LabelKeys: containerLabels},
		kind: runtimeapi.MetricType_GAUGE, container: func(s shim.Stats) uint64 { return s.Processes }},
	{desc: &runtimeapi.MetricDescriptor{Name: "container_network_receive_bytes_total", Help: "Cumulative count of bytes received.", LabelKeys: networkLabels},
		kind: runtimeapi.MetricType_COUNTER, network: func(i sandbox.Interface) uint64 { return i.RxBytes }},
	{desc: &runtimeapi.MetricDescriptor{Name: "container_network_receive_errors_total", Help: "Cumulative count of errors encountered while receiving.", LabelKeys: networkLabels},
		kind: runtimeapi.MetricType_COUNTER, network: func(i sandbox.Interface) uint64 { return i.RxErrors }},
	{desc: &runtimeapi.MetricDescriptor{Name: "container_network_transmit_bytes_total", Help: "Cumulative count of bytes transmitted.", LabelKeys: networkLabels},
		kind: runtimeapi.MetricType_COUNTER, network: func(i sandbox.Interface) uint64 { return i.TxBytes }},
	{desc: &runtimeapi.MetricDescriptor{Name: "container_network_transmit_errors_total", Help: "Cumulative count of errors encountered while transmitting.", LabelKeys: networkLabels},
		kind: runtimeapi.MetricType_COUNTER, network: func(i sandbox.Interface) uint64 { return i.TxErrors }},
}

// ListMetricDescriptors names the metrics ListPodSandboxMetrics serves.
func (s *Server) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	resp := &runtimeapi.ListMetricDescriptorsResponse{}
	for _, m := range metricDefs {
		resp.Descriptors = append(resp.Descriptors, m.desc)
	}
	return resp, nil
}

// ListPodSandboxMetrics reports every ready pod's network metrics and its
// running containers' cgroup metrics. A pod or container that stops while
// the list is made is left out.
func (s *Server) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	items, err := s.listPodSandboxMetrics(ctx)
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: items}
	return resp, checkListSize(resp, "ListPodSandboxMetrics", "StreamPodSandboxMetrics", len(items))
}

func (s *Server) listPodSandboxMetrics(ctx context.Context) ([]*runtimeapi.PodSandboxMetrics, error) {
	ready := store.SandboxReady
	pods, err := s.store.ListSandboxes(store.SandboxFilter{State: &ready})
	if err != nil {
		return nil, fmt.Errorf("list pod sandbox metrics: %w", err)
	}
	var items []*runtimeapi.PodSandboxMetrics
	for _, sb := range pods {
		pm, err := s.podMetrics(ctx, sb)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			slog.Debug("no metrics for pod", "pod", sb.ID, "err", err)
			continue
		}
		items = append(items, pm)
	}
	return items, nil
}

func (s *Server) podMetrics(ctx context.Context, sb store.Sandbox) (*runtimeapi.PodSandboxMetrics, error) {
	spec, err := storedSpec(sb)
	if err != nil {
		return nil, err
	}
	st, err := s.sandboxes.Stats(ctx, spec)
	if err != nil {
		return nil, err
	}
	pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: sb.ID}
	ts := st.At.UnixNano()
	// Pod-level series carry cAdvisor's pause-container labels: no
	// container name, the pod's ID.
	podLabels := []string{"", sb.ID, "", sb.ID, sb.Namespace, sb.Name}
	for _, m := range metricDefs {
		if m.network == nil {
			continue
		}
		for _, iface := range st.Interfaces {
			pm.Metrics = append(pm.Metrics, &runtimeapi.Metric{Name: m.desc.Name, Timestamp: ts, MetricType: m.kind,
				LabelValues: append(append([]string(nil), podLabels...), iface.Name), Value: &runtimeapi.UInt64Value{Value: m.network(iface)}})
		}
	}
	running := store.ContainerRunning
	ctrs, err := s.store.ListContainers(store.ContainerFilter{SandboxID: sb.ID, State: &running})
	if err != nil {
		return nil, err
	}
	for _, c := range ctrs {
		cs, err := s.containers.ContainerStats(ctx, sb.ID, c.ID)
		if err != nil {
			slog.Debug("no metrics for container", "container", c.ID, "err", err)
			continue
		}
		labels := []string{c.Name, c.ID, c.Image, c.ID, sb.Namespace, sb.Name}
		cm := &runtimeapi.ContainerMetrics{ContainerId: c.ID}
		for _, m := range metricDefs {
			if m.container != nil {
				cm.Metrics = append(cm.Metrics, &runtimeapi.Metric{Name: m.desc.Name, Timestamp: cs.At.UnixNano(), MetricType: m.kind,
					LabelValues: labels, Value: &runtimeapi.UInt64Value{Value: m.container(cs)}})
			}
		}
		pm.ContainerMetrics = append(pm.ContainerMetrics, cm)
	}
	return pm, nil
}
