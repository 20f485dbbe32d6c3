package cri

import (
	"testing"
	"time"

	"go.uber.org/mock/gomock"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

func TestPodSandboxMetrics(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	pod := runTestPod(t, d, testPodConfig("web"))
	ctr := store.Container{ID: "c1", SandboxID: pod, Name: "app", Key: pod + "/app_0", State: store.ContainerRunning, Image: "busybox"}
	if err := d.store.CreateContainer(ctr); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 0)
	d.sandboxes.EXPECT().Stats(gomock.Any(), gomock.Any()).Return(sandbox.Stats{Stats: shim.Stats{At: at},
		Interfaces: []sandbox.Interface{{Name: "eth0", RxBytes: 100, TxBytes: 200}}}, nil)
	d.containers.EXPECT().ContainerStats(gomock.Any(), pod, "c1").Return(shim.Stats{At: at, CPUUsageNanos: 3e9, MemoryWorkingSet: 4096}, nil)

	descs, err := d.srv.ListMetricDescriptors(t.Context(), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	known := map[string][]string{}
	for _, d := range descs.Descriptors {
		if d.Help == "" || len(d.LabelKeys) == 0 {
			t.Errorf("descriptor %s lacks help or labels", d.Name)
		}
		known[d.Name] = d.LabelKeys
	}
	resp, err := d.srv.ListPodSandboxMetrics(t.Context(), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil || len(resp.PodMetrics) != 1 {
		t.Fatalf("ListPodSandboxMetrics = %v, %v", resp, err)
	}
	pm := resp.PodMetrics[0]
	values := map[string]uint64{}
	check := func(ms []*runtimeapi.Metric) {
		for _, m := range ms {
			if keys, ok := known[m.Name]; !ok || len(keys) != len(m.LabelValues) {
				t.Errorf("metric %s: %d label values for keys %v", m.Name, len(m.LabelValues), keys)
			}
			values[m.Name] = m.Value.GetValue()
		}
	}
	check(pm.Metrics)
	if len(pm.ContainerMetrics) != 1 || pm.ContainerMetrics[0].ContainerId != "c1" {
		t.Fatalf("container metrics = %v", pm.ContainerMetrics)
	}
	check(pm.ContainerMetrics[0].Metrics)
	for name, want := range map[string]uint64{
		"container_network_receive_bytes_total": 100, "container_network_transmit_bytes_total": 200,
		"container_cpu_usage_seconds_total": 3, "container_memory_working_set_bytes": 4096,
	} {
		if values[name] != want {
			t.Errorf("%s = %d, want %d", name, values[name], want)
		}
	}
}
