package cri

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/mock/gomock"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

// With a stats period, the lists answer from what the last round read; a
// container the round has not seen twice (no CPU rate yet) is read when
// asked; the single-container call always reads.
func TestStatsCache(t *testing.T) {
	d := newTestDeps(t, Config{StatsPeriod: time.Hour}) // rounds by hand
	blockWait(d.sandboxes)
	pod := runTestPod(t, d, testPodConfig("web"))
	for _, id := range []string{"c1", "c2"} {
		if err := d.store.CreateContainer(store.Container{ID: id, SandboxID: pod, Name: id, Key: pod + "/" + id, State: store.ContainerRunning}); err != nil {
			t.Fatal(err)
		}
	}
	// Each read is 2 s after the one before and used 1 s of CPU more.
	start := time.Now().Add(-time.Minute)
	var reads atomic.Int64
	read := func() shim.Stats {
		n := reads.Add(1)
		cg := testCgroup()
		cg.CpuStats.CpuUsage.TotalUsage = uint64(n) * 1e9
		return shim.Stats{At: start.Add(time.Duration(n) * 2 * time.Second), Cgroup: cg}
	}
	// Counted under mu: the lists read 8 at a time.
	var mu sync.Mutex
	ctrReads, podReads := map[string]int{}, 0
	counts := func() (map[string]int, int) {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(ctrReads), podReads
	}
	d.shimOf(pod).EXPECT().Stats(gomock.Any(), gomock.Any(), shim.StatsOptions{}).DoAndReturn(func(_ context.Context, id string, _ shim.StatsOptions) (shim.Stats, error) {
		mu.Lock()
		defer mu.Unlock()
		ctrReads[id]++
		return read(), nil
	}).AnyTimes()
	d.images.EXPECT().WritableUsage(gomock.Any(), gomock.Any()).Return(uint64(4096), uint64(3), nil).AnyTimes()
	d.sandboxes.EXPECT().Stats(gomock.Any(), gomock.Any()).DoAndReturn(func(context.Context, sandbox.Spec) (sandbox.Stats, error) {
		mu.Lock()
		defer mu.Unlock()
		podReads++
		return sandbox.Stats{Stats: read()}, nil
	}).AnyTimes()

	listCtrs := func() []*runtimeapi.ContainerStats {
		t.Helper()
		l, err := intercept(t, d.srv.ListContainerStats, &runtimeapi.ListContainerStatsRequest{})
		if err != nil || len(l.Stats) != 2 {
			t.Fatalf("ListContainerStats = %v, %v; want c1 and c2", l, err)
		}
		return l.Stats
	}
	// Nothing read yet: both read when asked, then by the rounds, which
	// run only once someone lists.
	if d.srv.stats.wanted(time.Hour) {
		t.Error("rounds wanted before any list")
	}
	listCtrs()
	if !d.srv.stats.wanted(time.Hour) {
		t.Error("rounds not wanted after a list")
	}
	for range 2 {
		if err := d.srv.statsRound(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if ctrReads, podReads := counts(); ctrReads["c1"] != 3 || ctrReads["c2"] != 3 || podReads != 2 {
		t.Fatalf("reads %v, pod %d: want 3 of each container, 2 of the pod", ctrReads, podReads)
	}
	// Now every figure has a rate: the lists read nothing.
	first := listCtrs()
	for _, st := range first {
		if st.Cpu.UsageNanoCores == nil {
			t.Errorf("%s: no CPU rate after two rounds", st.Attributes.Id)
		}
	}
	again := listCtrs()
	pods, err := intercept(t, d.srv.ListPodSandboxStats, &runtimeapi.ListPodSandboxStatsRequest{})
	if err != nil || len(pods.Stats) != 1 || len(pods.Stats[0].Linux.Containers) != 2 {
		t.Fatalf("ListPodSandboxStats = %v, %v; want the pod with its 2 containers", pods, err)
	}
	if ctrReads, podReads := counts(); ctrReads["c1"] != 3 || ctrReads["c2"] != 3 || podReads != 2 {
		t.Errorf("reads %v, pod %d after the lists: want none more", ctrReads, podReads)
	}
	if first[0].Cpu.Timestamp != again[0].Cpu.Timestamp {
		t.Errorf("two lists between rounds differ: %d, %d", first[0].Cpu.Timestamp, again[0].Cpu.Timestamp)
	}
	// The list's pod message is a copy: the cached one keeps no containers.
	if cached := d.srv.stats.pod(pod, time.Hour); cached == nil || len(cached.Linux.Containers) != 0 {
		t.Errorf("cached pod stats %v: want the pod's own figures alone", cached)
	}

	// The single call reads.
	_, err = intercept(t, d.srv.ContainerStats, &runtimeapi.ContainerStatsRequest{ContainerId: "c1"})
	if ctrReads, _ := counts(); err != nil || ctrReads["c1"] != 4 {
		t.Errorf("ContainerStats: %v, %d reads of c1; want a 4th", err, ctrReads["c1"])
	}
	// A container the rounds have not seen is read when asked; one that
	// exited is no longer listed, though the cache still holds it.
	if err := d.store.CreateContainer(store.Container{ID: "c3", SandboxID: pod, Name: "c3", Key: pod + "/c3", State: store.ContainerRunning}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.store.UpdateContainer("c2", func(c *store.Container) error { c.State = store.ContainerExited; return nil }); err != nil {
		t.Fatal(err)
	}
	l := listCtrs()
	if ctrReads, _ := counts(); l[0].Attributes.Id != "c1" || l[1].Attributes.Id != "c3" || ctrReads["c3"] != 1 {
		t.Errorf("listed %s and %s, %d reads of c3; want c1 and c3, read once", l[0].Attributes.Id, l[1].Attributes.Id, ctrReads["c3"])
	}
}
