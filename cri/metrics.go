package cri

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

// The metrics are cAdvisor's, names and labels: kubelet with the
// PodAndContainerStatsFromCRI gate serves them on /metrics/cadvisor in
// cAdvisor's place, and the dashboards and alerts built on cAdvisor's names
// keep working. Values are whole numbers: the CRI carries integers.

// containerLabels come first in every metric; a def's extra labels follow.
var containerLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

// ctrFacts is what one container's metrics are read from.
type ctrFacts struct {
	c      *store.Container
	st     shim.Stats
	usage  fsUsage // its writable layer
	fs     fsFacts // the file system the writable layer is on
	device string  // that file system's device, cAdvisor's label for it
	now    time.Time
}

// sample is one value of a metric, with the values of its extra labels.
type sample struct {
	labels []string
	value  uint64
}

func one(v uint64) []sample { return []sample{{value: v}} }

func seconds(nanos uint64) uint64 { return nanos / uint64(time.Second) }

// metricDef is one metric ketch serves: cAdvisor's name, help and extra
// labels, and how to read it from a container (container) or from one of
// its pod's interfaces (network, labelled with cAdvisor's "POD").
type metricDef struct {
	name, help string
	extra      []string
	kind       runtimeapi.MetricType
	container  func(ctrFacts) []sample
	network    func(sandbox.Interface) uint64
}

const (
	counter = runtimeapi.MetricType_COUNTER
	gauge   = runtimeapi.MetricType_GAUGE
)

func memStat(st shim.Stats, key string) uint64 { return st.Cgroup.MemoryStats.Stats[key] }

// hierStat is a memory.stat figure of the whole hierarchy: v1's total_*,
// v2's plain key (v2 counts hierarchically).
func hierStat(st shim.Stats, key string) uint64 {
	if v, ok := st.Cgroup.MemoryStats.Stats["total_"+key]; ok {
		return v
	}
	return memStat(st, key)
}

var metricDefs = []metricDef{
	// CPU
	{name: "container_cpu_usage_seconds_total", help: "Cumulative cpu time consumed in seconds.", kind: counter,
		container: func(f ctrFacts) []sample { return one(seconds(f.st.CPUUsageNanos())) }},
	{name: "container_cpu_user_seconds_total", help: "Cumulative user cpu time consumed in seconds.", kind: counter,
		container: func(f ctrFacts) []sample { return one(seconds(f.st.Cgroup.CpuStats.CpuUsage.UsageInUsermode)) }},
	{name: "container_cpu_system_seconds_total", help: "Cumulative system cpu time consumed in seconds.", kind: counter,
		container: func(f ctrFacts) []sample { return one(seconds(f.st.Cgroup.CpuStats.CpuUsage.UsageInKernelmode)) }},
	{name: "container_cpu_cfs_periods_total", help: "Number of elapsed enforcement period intervals.", kind: counter,
		container: func(f ctrFacts) []sample { return one(f.st.Cgroup.CpuStats.ThrottlingData.Periods) }},
	{name: "container_cpu_cfs_throttled_periods_total", help: "Number of throttled period intervals.", kind: counter,
		container: func(f ctrFacts) []sample { return one(f.st.Cgroup.CpuStats.ThrottlingData.ThrottledPeriods) }},
	{name: "container_cpu_cfs_throttled_seconds_total", help: "Total time duration the container has been throttled.", kind: counter,
		container: func(f ctrFacts) []sample { return one(seconds(f.st.Cgroup.CpuStats.ThrottlingData.ThrottledTime)) }},

	// Memory
	{name: "container_memory_usage_bytes", help: "Current memory usage in bytes, including all memory regardless of when it was accessed.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.MemoryUsage()) }},
	{name: "container_memory_max_usage_bytes", help: "Maximum memory usage recorded in bytes.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.Cgroup.MemoryStats.Usage.MaxUsage) }},
	{name: "container_memory_working_set_bytes", help: "Current working set in bytes.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.MemoryWorkingSet()) }},
	{name: "container_memory_rss", help: "Size of RSS in bytes.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.MemoryRSS()) }},
	{name: "container_memory_cache", help: "Number of bytes of page cache memory.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.MemoryCache()) }},
	{name: "container_memory_mapped_file", help: "Size of memory mapped files in bytes.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.MemoryMappedFile()) }},
	{name: "container_memory_kernel_usage", help: "Size of kernel memory allocated in bytes.", kind: gauge,
		container: func(f ctrFacts) []sample {
			if k := f.st.Cgroup.MemoryStats.KernelUsage.Usage; k > 0 {
				return one(k)
			}
			return one(memStat(f.st, "kernel"))
		}},
	{name: "container_memory_swap", help: "Container swap usage in bytes.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.SwapUsage()) }},
	{name: "container_memory_failcnt", help: "Number of memory usage hits limits.", kind: counter,
		container: func(f ctrFacts) []sample { return one(f.st.Cgroup.MemoryStats.Usage.Failcnt) }},
	{name: "container_memory_total_active_file_bytes", help: "Current total active file in bytes.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(hierStat(f.st, "active_file")) }},
	{name: "container_memory_total_inactive_file_bytes", help: "Current total inactive file in bytes.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(hierStat(f.st, "inactive_file")) }},
	{name: "container_memory_failures_total", help: "Cumulative count of memory allocation failures.", extra: []string{"failure_type", "scope"}, kind: counter,
		container: func(f ctrFacts) []sample {
			var out []sample
			for _, t := range []string{"pgfault", "pgmajfault"} {
				out = append(out, sample{[]string{t, "container"}, memStat(f.st, t)}, sample{[]string{t, "hierarchy"}, hierStat(f.st, t)})
			}
			return out
		}},
	{name: "container_oom_events_total", help: "Count of out of memory events observed for the container.", kind: counter,
		container: func(f ctrFacts) []sample { return one(f.st.OOMKills) }},

	// Writable layer and its file system
	{name: "container_fs_usage_bytes", help: "Number of bytes that are consumed by the container on this filesystem.", extra: []string{"device"}, kind: gauge,
		container: func(f ctrFacts) []sample { return []sample{{[]string{f.device}, f.usage.bytes}} }},
	{name: "container_fs_limit_bytes", help: "Number of bytes that can be consumed by the container on this filesystem.", extra: []string{"device"}, kind: gauge,
		container: func(f ctrFacts) []sample { return []sample{{[]string{f.device}, f.fs.capacity}} }},
	{name: "container_fs_inodes_total", help: "Number of Inodes.", extra: []string{"device"}, kind: gauge,
		container: func(f ctrFacts) []sample { return []sample{{[]string{f.device}, f.fs.inodes}} }},
	{name: "container_fs_inodes_free", help: "Number of available Inodes.", extra: []string{"device"}, kind: gauge,
		container: func(f ctrFacts) []sample { return []sample{{[]string{f.device}, f.fs.inodesFree}} }},

	// Block IO, by device
	{name: "container_fs_reads_bytes_total", help: "Cumulative count of bytes read.", extra: []string{"device"}, kind: counter,
		container: func(f ctrFacts) []sample {
			return blkioByDevice(f.st.Cgroup.BlkioStats.IoServiceBytesRecursive, "Read")
		}},
	{name: "container_fs_writes_bytes_total", help: "Cumulative count of bytes written.", extra: []string{"device"}, kind: counter,
		container: func(f ctrFacts) []sample {
			return blkioByDevice(f.st.Cgroup.BlkioStats.IoServiceBytesRecursive, "Write")
		}},
	{name: "container_fs_reads_total", help: "Cumulative count of reads completed.", extra: []string{"device"}, kind: counter,
		container: func(f ctrFacts) []sample { return blkioByDevice(f.st.Cgroup.BlkioStats.IoServicedRecursive, "Read") }},
	{name: "container_fs_writes_total", help: "Cumulative count of writes completed.", extra: []string{"device"}, kind: counter,
		container: func(f ctrFacts) []sample { return blkioByDevice(f.st.Cgroup.BlkioStats.IoServicedRecursive, "Write") }},
	{name: "container_blkio_device_usage_total", help: "Blkio Device bytes usage.", extra: []string{"device", "major", "minor", "operation"}, kind: counter,
		container: func(f ctrFacts) []sample {
			var out []sample
			for _, e := range f.st.Cgroup.BlkioStats.IoServiceBytesRecursive {
				out = append(out, sample{[]string{blockDevice(e.Major, e.Minor), strconv.FormatUint(e.Major, 10), strconv.FormatUint(e.Minor, 10), e.Op}, e.Value})
			}
			return out
		}},

	// Processes
	{name: "container_processes", help: "Number of processes running inside the container.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.Processes()) }},
	{name: "container_threads", help: "Number of threads running inside the container.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.Threads) }},
	{name: "container_threads_max", help: "Maximum number of threads allowed inside the container, infinity if value is zero.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.Cgroup.PidsStats.Limit) }},
	{name: "container_file_descriptors", help: "Number of open file descriptors for the container.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.FileDescriptors) }},
	{name: "container_sockets", help: "Number of open sockets for the container.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.Sockets) }},
	{name: "container_ulimits_soft", help: "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice.", extra: []string{"ulimit"}, kind: gauge,
		container: func(f ctrFacts) []sample { return []sample{{[]string{"max_open_files"}, f.st.OpenFilesLimit}} }},

	// Pressure (cgroup v2 only)
	psiDef("cpu", "waiting", func(st shim.Stats) uint64 { return psiTotal(st.Cgroup.CpuStats.PSI, false) }),
	psiDef("cpu", "stalled", func(st shim.Stats) uint64 { return psiTotal(st.Cgroup.CpuStats.PSI, true) }),
	psiDef("memory", "waiting", func(st shim.Stats) uint64 { return psiTotal(st.Cgroup.MemoryStats.PSI, false) }),
	psiDef("memory", "stalled", func(st shim.Stats) uint64 { return psiTotal(st.Cgroup.MemoryStats.PSI, true) }),
	psiDef("io", "waiting", func(st shim.Stats) uint64 { return psiTotal(st.Cgroup.BlkioStats.PSI, false) }),
	psiDef("io", "stalled", func(st shim.Stats) uint64 { return psiTotal(st.Cgroup.BlkioStats.PSI, true) }),

	// Times
	{name: "container_start_time_seconds", help: "Start time of the container since unix epoch in seconds.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(uint64(f.c.StartedAt.Unix())) }},
	{name: "container_last_seen", help: "Last time a container was seen by the exporter.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(uint64(f.now.Unix())) }},

	// Settings
	{name: "container_spec_cpu_period", help: "CPU period of the container.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.CPUPeriod) }},
	{name: "container_spec_cpu_quota", help: "CPU quota of the container.", kind: gauge,
		container: func(f ctrFacts) []sample {
			if f.st.CPUQuota <= 0 {
				return nil // cAdvisor, too, has none without a quota
			}
			return one(uint64(f.st.CPUQuota))
		}},
	{name: "container_spec_cpu_shares", help: "CPU share of the container.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.CPUShares) }},
	{name: "container_spec_memory_limit_bytes", help: "Memory limit for the container.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.MemoryLimit()) }},
	{name: "container_spec_memory_reservation_limit_bytes", help: "Memory reservation limit for the container.", kind: gauge,
		container: func(f ctrFacts) []sample { return one(f.st.MemoryReservation) }},
	{name: "container_spec_memory_swap_limit_bytes", help: "Memory swap limit for the container.", kind: gauge,
		container: func(f ctrFacts) []sample { l, _ := f.st.SwapLimit(); return one(l) }},

	// The pod's network, from its namespace
	{name: "container_network_receive_bytes_total", help: "Cumulative count of bytes received.", extra: []string{"interface"}, kind: counter,
		network: func(i sandbox.Interface) uint64 { return i.RxBytes }},
	{name: "container_network_receive_packets_total", help: "Cumulative count of packets received.", extra: []string{"interface"}, kind: counter,
		network: func(i sandbox.Interface) uint64 { return i.RxPackets }},
	{name: "container_network_receive_packets_dropped_total", help: "Cumulative count of packets dropped while receiving.", extra: []string{"interface"}, kind: counter,
		network: func(i sandbox.Interface) uint64 { return i.RxDropped }},
	{name: "container_network_receive_errors_total", help: "Cumulative count of errors encountered while receiving.", extra: []string{"interface"}, kind: counter,
		network: func(i sandbox.Interface) uint64 { return i.RxErrors }},
	{name: "container_network_transmit_bytes_total", help: "Cumulative count of bytes transmitted.", extra: []string{"interface"}, kind: counter,
		network: func(i sandbox.Interface) uint64 { return i.TxBytes }},
	{name: "container_network_transmit_packets_total", help: "Cumulative count of packets transmitted.", extra: []string{"interface"}, kind: counter,
		network: func(i sandbox.Interface) uint64 { return i.TxPackets }},
	{name: "container_network_transmit_packets_dropped_total", help: "Cumulative count of packets dropped while transmitting.", extra: []string{"interface"}, kind: counter,
		network: func(i sandbox.Interface) uint64 { return i.TxDropped }},
	{name: "container_network_transmit_errors_total", help: "Cumulative count of errors encountered while transmitting.", extra: []string{"interface"}, kind: counter,
		network: func(i sandbox.Interface) uint64 { return i.TxErrors }},
}

// psiDef is cAdvisor's pressure metric of a resource: "waiting" is the
// time some tasks waited, "stalled" the time all did.
func psiDef(resource, how string, total func(shim.Stats) uint64) metricDef {
	return metricDef{name: "container_pressure_" + resource + "_" + how + "_seconds_total",
		help: "Total time duration tasks in the container have " + how + " due to " + resource + " congestion.", kind: counter,
		container: func(f ctrFacts) []sample {
			if v := total(f.st); v > 0 {
				return one(v)
			}
			return nil
		}}
}

// psiTotal is a pressure total in seconds; the kernel counts microseconds.
func psiTotal(p *cgroups.PSIStats, full bool) uint64 {
	switch {
	case p == nil:
		return 0
	case full:
		return p.Full.Total / 1e6
	default:
		return p.Some.Total / 1e6
	}
}

// blkioByDevice sums the entries of operation op by device.
func blkioByDevice(entries []cgroups.BlkioStatEntry, op string) []sample {
	var out []sample
	index := map[string]int{}
	for _, e := range entries {
		if e.Op != op && e.Op != strings.ToLower(op) {
			continue
		}
		dev := blockDevice(e.Major, e.Minor)
		if i, ok := index[dev]; ok {
			out[i].value += e.Value
			continue
		}
		index[dev] = len(out)
		out = append(out, sample{[]string{dev}, e.Value})
	}
	return out
}

func (m metricDef) descriptor() *runtimeapi.MetricDescriptor {
	return &runtimeapi.MetricDescriptor{Name: m.name, Help: m.help, LabelKeys: append(append([]string(nil), containerLabels...), m.extra...)}
}

// ListMetricDescriptors names the metrics ListPodSandboxMetrics serves.
func (s *Server) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	resp := &runtimeapi.ListMetricDescriptorsResponse{}
	for _, m := range metricDefs {
		resp.Descriptors = append(resp.Descriptors, m.descriptor())
	}
	return resp, nil
}

// ListPodSandboxMetrics reports every ready pod's network metrics and its
// running containers' metrics. A pod or container that stops while the
// list is made is left out.
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
	// Listed once, not once a pod: a workflow node keeps thousands of
	// exited containers.
	running := store.ContainerRunning
	ctrs, err := s.store.ListContainers(store.ContainerFilter{State: &running})
	if err != nil {
		return nil, fmt.Errorf("list pod sandbox metrics: %w", err)
	}
	byPod := map[string][]*store.Container{}
	for _, c := range ctrs {
		byPod[c.SandboxID] = append(byPod[c.SandboxID], c)
	}
	fs, device := statFS(s.cfg.ImageRoot)
	return gather(ctx, pods, podAttrs, func(ctx context.Context, sb store.Sandbox) (*runtimeapi.PodSandboxMetrics, error) {
		return s.podMetrics(ctx, sb, byPod[sb.ID], fs, device)
	})
}

// podMetrics reads pod sb's metrics and those of ctrs, its running
// containers.
func (s *Server) podMetrics(ctx context.Context, sb store.Sandbox, ctrs []*store.Container, fs fsFacts, device string) (*runtimeapi.PodSandboxMetrics, error) {
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
	// The pod's series carry cAdvisor's labels of a pause container.
	podLabels := []string{"POD", sb.ID, "", sb.ID, sb.Namespace, sb.Name}
	for _, m := range metricDefs {
		if m.network == nil {
			continue
		}
		for _, iface := range st.Interfaces {
			pm.Metrics = append(pm.Metrics, &runtimeapi.Metric{Name: m.name, Timestamp: ts, MetricType: m.kind,
				LabelValues: append(append([]string(nil), podLabels...), iface.Name), Value: &runtimeapi.UInt64Value{Value: m.network(iface)}})
		}
	}
	sh, shErr := s.containers.Shim(ctx, sb.ID)
	for _, c := range ctrs {
		f := ctrFacts{c: c, fs: fs, device: device, now: time.Now()}
		if shErr != nil {
			slog.Debug("no metrics for container", "pod", sb.ID, "container", c.ID, "err", shErr)
			continue
		}
		if f.st, err = sh.Stats(ctx, c.ID, shim.StatsOptions{Full: true}); err != nil {
			slog.Debug("no metrics for container", "pod", sb.ID, "container", c.ID, "err", err)
			continue
		}
		if f.usage.bytes, f.usage.inodes, err = s.images.WritableUsage(ctx, c.ID); err != nil {
			slog.Debug("no writable layer usage for container", "pod", sb.ID, "container", c.ID, "err", err)
		}
		labels := []string{c.Name, c.ID, c.Image, c.ID, sb.Namespace, sb.Name}
		cm := &runtimeapi.ContainerMetrics{ContainerId: c.ID}
		for _, m := range metricDefs {
			if m.container == nil {
				continue
			}
			for _, v := range m.container(f) {
				cm.Metrics = append(cm.Metrics, &runtimeapi.Metric{Name: m.name, Timestamp: f.st.At.UnixNano(), MetricType: m.kind,
					LabelValues: append(append([]string(nil), labels...), v.labels...), Value: &runtimeapi.UInt64Value{Value: v.value}})
			}
		}
		pm.ContainerMetrics = append(pm.ContainerMetrics, cm)
	}
	return pm, nil
}
