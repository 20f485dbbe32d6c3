package cri

import (
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	"go.uber.org/mock/gomock"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

// testCgroup is a v1 cgroup's figures as the cgroup library reads them.
func testCgroup() cgroups.Stats {
	return cgroups.Stats{
		CpuStats: cgroups.CpuStats{
			CpuUsage:       cgroups.CpuUsage{TotalUsage: 3e9, UsageInUsermode: 2e9, UsageInKernelmode: 1e9},
			ThrottlingData: cgroups.ThrottlingData{Periods: 10, ThrottledPeriods: 4, ThrottledTime: 5e9},
		},
		MemoryStats: cgroups.MemoryStats{
			Usage:     cgroups.MemoryData{Usage: 8192, MaxUsage: 9000, Limit: 80 << 20, Failcnt: 1},
			SwapUsage: cgroups.MemoryData{Usage: 8192, Limit: 80 << 20},
			Stats:     map[string]uint64{"total_inactive_file": 4096, "total_rss": 2048, "pgfault": 5, "total_pgfault": 7},
		},
		PidsStats: cgroups.PidsStats{Current: 2, Limit: 100},
		BlkioStats: cgroups.BlkioStats{IoServiceBytesRecursive: []cgroups.BlkioStatEntry{
			{Major: 254, Minor: 0, Op: "Read", Value: 100}, {Major: 254, Minor: 0, Op: "Write", Value: 50},
			{Major: 254, Minor: 0, Op: "Total", Value: 150},
		}},
	}
}

func TestPodSandboxMetrics(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	pod := runTestPod(t, d, testPodConfig("web"))
	ctr := store.Container{ID: "c1", SandboxID: pod, Name: "app", Key: pod + "/app_0", State: store.ContainerRunning, Image: "busybox",
		StartedAt: time.Unix(1700000000, 0)}
	if err := d.store.CreateContainer(ctr); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000100, 0)
	d.sandboxes.EXPECT().Stats(gomock.Any(), gomock.Any()).Return(sandbox.Stats{Stats: shim.Stats{At: at},
		Interfaces: []sandbox.Interface{{Name: "eth0", RxBytes: 100, TxBytes: 200, RxPackets: 3}}}, nil)
	d.shimOf(pod).EXPECT().Stats(gomock.Any(), "c1", shim.StatsOptions{Full: true}).Return(shim.Stats{At: at, Cgroup: testCgroup(), OOMKills: 1,
		FileDescriptors: 3, Sockets: 1, Threads: 2, OpenFilesLimit: 1024, CPUShares: 2, CPUPeriod: 100000, CPUQuota: -1}, nil)
	d.images.EXPECT().WritableUsage(gomock.Any(), "c1").Return(uint64(4096), uint64(3), nil)

	descs, err := d.srv.ListMetricDescriptors(t.Context(), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	known := map[string][]string{}
	for _, d := range descs.Descriptors {
		if _, dup := known[d.Name]; dup || d.Help == "" || !strings.HasPrefix(d.Name, "container_") {
			t.Errorf("descriptor %s: duplicate, without help or not cAdvisor's", d.Name)
		}
		known[d.Name] = d.LabelKeys
	}
	// cAdvisor's set as kubelet's node conformance test reads it from
	// /metrics/cadvisor, less what cAdvisor itself leaves at 0 unless
	// told otherwise (load average, task states).
	if len(known) < 50 {
		t.Errorf("%d metrics described, want cAdvisor's set", len(known))
	}
	resp, err := d.srv.ListPodSandboxMetrics(t.Context(), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil || len(resp.PodMetrics) != 1 {
		t.Fatalf("ListPodSandboxMetrics = %v, %v", resp, err)
	}
	pm := resp.PodMetrics[0]
	values := map[string]uint64{}
	series := map[string]bool{}
	check := func(ms []*runtimeapi.Metric) {
		for _, m := range ms {
			keys, ok := known[m.Name]
			if !ok || len(keys) != len(m.LabelValues) {
				t.Errorf("metric %s: %d label values for keys %v", m.Name, len(m.LabelValues), keys)
				continue
			}
			// kubelet's registry drops a scrape's duplicate series.
			id := m.Name + "{" + strings.Join(m.LabelValues, ",") + "}"
			if series[id] {
				t.Errorf("series %s twice", id)
			}
			series[id] = true
			var extra []string
			for i, k := range keys[len(containerLabels):] {
				extra = append(extra, k+"="+m.LabelValues[len(containerLabels)+i])
			}
			values[strings.Join(append([]string{m.Name}, extra...), " ")] = m.Value.GetValue()
		}
	}
	check(pm.Metrics)
	for _, m := range pm.Metrics {
		if m.LabelValues[0] != "POD" || m.LabelValues[5] != "web" {
			t.Errorf("pod series %s labelled %v, want cAdvisor's POD container of pod web", m.Name, m.LabelValues)
		}
	}
	if len(pm.ContainerMetrics) != 1 || pm.ContainerMetrics[0].ContainerId != "c1" {
		t.Fatalf("container metrics = %v", pm.ContainerMetrics)
	}
	check(pm.ContainerMetrics[0].Metrics)
	for name, want := range map[string]uint64{
		"container_network_receive_bytes_total interface=eth0":                              100,
		"container_network_transmit_bytes_total interface=eth0":                             200,
		"container_network_receive_packets_total interface=eth0":                            3,
		"container_cpu_usage_seconds_total":                                                 3,
		"container_cpu_user_seconds_total":                                                  2,
		"container_cpu_system_seconds_total":                                                1,
		"container_cpu_cfs_throttled_periods_total":                                         4,
		"container_cpu_cfs_throttled_seconds_total":                                         5,
		"container_memory_working_set_bytes":                                                4096,
		"container_memory_rss":                                                              2048,
		"container_memory_max_usage_bytes":                                                  9000,
		"container_memory_failcnt":                                                          1,
		"container_memory_swap":                                                             0,
		"container_memory_failures_total failure_type=pgfault scope=container":              5,
		"container_memory_failures_total failure_type=pgfault scope=hierarchy":              7,
		"container_oom_events_total":                                                        1,
		"container_processes":                                                               2,
		"container_threads_max":                                                             100,
		"container_file_descriptors":                                                        3,
		"container_sockets":                                                                 1,
		"container_ulimits_soft ulimit=max_open_files":                                      1024,
		"container_spec_cpu_shares":                                                         2,
		"container_spec_cpu_period":                                                         100000,
		"container_spec_memory_limit_bytes":                                                 80 << 20,
		"container_spec_memory_swap_limit_bytes":                                            0,
		"container_start_time_seconds":                                                      1700000000,
		"container_fs_reads_bytes_total device=254:0":                                       100,
		"container_fs_writes_bytes_total device=254:0":                                      50,
		"container_blkio_device_usage_total device=254:0 major=254 minor=0 operation=Total": 150,
	} {
		if strings.Contains(name, "254:0") && blockDevice(254, 0) != "254:0" {
			name = strings.ReplaceAll(name, "device=254:0", "device="+blockDevice(254, 0))
		}
		if got, ok := values[name]; !ok || got != want {
			t.Errorf("%s = %d (reported %v), want %d", name, got, ok, want)
		}
	}
	for name := range values {
		if strings.HasPrefix(name, "container_spec_cpu_quota") || strings.HasPrefix(name, "container_pressure_") {
			t.Errorf("%s reported for a container without a quota on cgroup v1", name)
		}
	}
}

type cpuRead struct {
	after time.Duration
	nanos uint64
}

func TestCPURates(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		desc  string
		reads []cpuRead
		want  *uint64
	}{
		{desc: "first read: no rate yet", reads: []cpuRead{{0, 5e9}}},
		{desc: "half a core over 2 s", reads: []cpuRead{{0, 5e9}, {2 * time.Second, 6e9}}, want: ptr(uint64(5e8))},
		{desc: "a read within the window keeps the last rate", reads: []cpuRead{{0, 5e9}, {2 * time.Second, 6e9}, {2100 * time.Millisecond, 9e9}}, want: ptr(uint64(5e8))},
		{desc: "an older read arriving late changes nothing", reads: []cpuRead{{0, 5e9}, {2 * time.Second, 6e9}, {time.Second, 5.5e9}}, want: ptr(uint64(5e8))},
		{desc: "a counter that went back starts over", reads: []cpuRead{{0, 5e9}, {2 * time.Second, 1e9}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var r cpuRates
			var got *runtimeapi.UInt64Value
			for _, rd := range tc.reads {
				got = r.rate("c", t0.Add(rd.after), rd.nanos)
			}
			switch {
			case tc.want == nil && got != nil:
				t.Errorf("rate = %d, want none", got.Value)
			case tc.want != nil && (got == nil || got.Value != *tc.want):
				t.Errorf("rate = %v, want %d", got, *tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
