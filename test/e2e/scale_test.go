//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// threads is the number of OS threads of process pid.
func threads(tb testing.TB, pid int) int {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatalf("no Threads line in /proc/%d/status", pid)
	return 0
}

// TestThreadsFlatInPods: ketchd holds no OS thread per pod or container
// while 100 pods of one container run. Go keeps the threads it once made,
// so 20 pods started as the rest will be, 10 at a time, warm ketchd up
// first: any growth after that is per pod (it was one thread a pod while
// ketchd waited for every shim in waitid).
func TestThreadsFlatInPods(t *testing.T) {
	const warm, pods, workers = 20, 100, 10
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	s := &scaleRun{b: t, d: d, ids: make([]string, pods), cfgs: make([]*runtimeapi.PodSandboxConfig, pods)}
	defer func() {
		for _, id := range s.ids {
			if id != "" {
				d.stopPod(t, id)
				d.removePod(t, id)
			}
		}
	}()
	pid, logs := d.cmd.Process.Pid, t.TempDir()
	idle := threads(t, pid)
	inParallel(s.b, workers, 0, warm, func(i int) error { return s.startPod(i, logs) })
	warmed := threads(t, pid)
	inParallel(s.b, workers, warm, pods, func(i int) error { return s.startPod(i, logs) })
	after := threads(t, pid)
	t.Logf("ketchd threads: idle %d, with %d pods %d, with %d pods %d", idle, warm, warmed, pods, after)
	if running := len(d.containers(t, &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})); running != pods {
		t.Fatalf("%d containers running, want %d", running, pods)
	}
	// The bound: twice GOMAXPROCS (ketchd's is the CPU count here)
	// and a small constant, whatever the pod count.
	if limit := 2*runtime.NumCPU() + 12; after > limit || after-warmed >= (pods-warm)/10 {
		t.Errorf("ketchd has %d threads with %d pods (%d with %d): want at most %d, and no growth per pod", after, pods, warmed, warm, limit)
	}
}
