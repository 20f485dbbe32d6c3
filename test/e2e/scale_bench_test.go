//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkScale is `make scale` (KETCH_SCALE_PODS=1000) and, at kubelet's
// default of 110 pods, part of `make bench`. Driven through the CRI, so
// that kubelet's maxPods is not in the way: pods of one container each,
// started 20 at a time; then KETCH_SCALE_EXITED exited containers (10 a
// pod by default), kept as a workflow node keeps them until kubelet's
// GC; ketchd killed -9 and started again; everything removed, 20 at a
// time. At 0, 110, 500 and 1,000 pods it logs ketchd's threads,
// goroutines, RSS and open descriptors, the pods' own processes' memory,
// the p50/p99 of the calls that started the pods since the last mark, and
// what the list calls take.
func BenchmarkScale(b *testing.B) {
	pods := envInt("KETCH_SCALE_PODS", 110)
	exited := envInt("KETCH_SCALE_EXITED", 10*pods)
	const workers = 20
	for b.Loop() {
		d := startKetchd(b, daemonOpts{network: true})
		d.mustPull(b, busybox)
		logs := b.TempDir()
		s := &scaleRun{b: b, d: d, ids: make([]string, pods), cfgs: make([]*runtimeapi.PodSandboxConfig, pods)}
		s.mark(0)
		from := 0
		for _, to := range []int{110, 500, 1000, pods} {
			if to > pods || to <= from {
				continue
			}
			inParallel(s.b, workers, from, to, func(i int) error { return s.startPod(i, logs) })
			s.mark(to)
			from = to
		}

		start := time.Now()
		inParallel(s.b, workers, 0, exited, func(i int) error { return s.exitedContainer(i) })
		b.Logf("%d exited containers made in %v", exited, time.Since(start).Round(time.Millisecond))
		s.lists(fmt.Sprintf("%d pods, %d containers", pods, pods+exited))

		// kill -9, then a new ketchd: how long until every pod is READY.
		d.kill(b)
		start = time.Now()
		s.d = restart(b, d)
		for {
			resp, err := s.d.rt.ListPodSandbox(ctxT(b, 10*time.Second), &runtimeapi.ListPodSandboxRequest{
				Filter: &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}},
			})
			if err == nil && len(resp.Items) == pods {
				break
			}
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("not every pod READY 5 min after the restart: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		restarted := time.Since(start)
		b.Logf("kill -9 of ketchd to all %d pods READY: %v; the new ketchd:\n%s", pods, restarted.Round(time.Millisecond), s.d.log.head(30))
		b.ReportMetric(float64(restarted.Milliseconds()), "restart-to-all-ready-ms")

		start = time.Now()
		inParallel(s.b, workers, 0, pods, func(i int) error {
			if _, err := s.d.rt.StopPodSandbox(ctxT(b, time.Minute), &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.ids[i]}); err != nil {
				return err
			}
			_, err := s.d.rt.RemovePodSandbox(ctxT(b, time.Minute), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.ids[i]})
			return err
		})
		b.Logf("%d pods and %d containers removed in %v", pods, pods+exited, time.Since(start).Round(time.Millisecond))
		s.d.checkNoContainerLeft(b)
		if left := len(s.d.pods(b, nil)); left != 0 {
			b.Errorf("%d pods left", left)
		}
	}
}

// scaleRun is one BenchmarkScale run. Workers write ids, cfgs and the
// latencies; mark and lists read them between batches, when no worker runs.
type scaleRun struct {
	b    testing.TB
	d    *daemon
	ids  []string
	cfgs []*runtimeapi.PodSandboxConfig

	mu                 sync.Mutex
	run, create, start []time.Duration // since the last mark; guarded by mu
}

func (s *scaleRun) timed(into *[]time.Duration, f func() error) error {
	t0 := time.Now()
	err := f()
	s.mu.Lock()
	*into = append(*into, time.Since(t0))
	s.mu.Unlock()
	return err
}

// startPod runs pod i with one long-lived container.
func (s *scaleRun) startPod(i int, logs string) error {
	b, rt := s.b, s.d.rt
	cfg := podConfig(b, fmt.Sprintf("scale-%d", i))
	cfg.LogDirectory = filepath.Join(logs, fmt.Sprint(i))
	if err := os.Mkdir(cfg.LogDirectory, 0o755); err != nil {
		return err
	}
	var pod, ctr string
	err := s.timed(&s.run, func() error {
		resp, err := rt.RunPodSandbox(ctxT(b, time.Minute), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		pod = resp.GetPodSandboxId()
		return err
	})
	if err != nil {
		return err
	}
	s.ids[i], s.cfgs[i] = pod, cfg
	if err := s.timed(&s.create, func() error {
		resp, err := rt.CreateContainer(ctxT(b, time.Minute), &runtimeapi.CreateContainerRequest{
			PodSandboxId: pod, Config: containerConfig("app", "sleep", "36000"), SandboxConfig: cfg,
		})
		ctr = resp.GetContainerId()
		return err
	}); err != nil {
		return err
	}
	return s.timed(&s.start, func() error {
		_, err := rt.StartContainer(ctxT(b, time.Minute), &runtimeapi.StartContainerRequest{ContainerId: ctr})
		return err
	})
}

// exitedContainer runs container i to its end in pod i mod the pod count.
func (s *scaleRun) exitedContainer(i int) error {
	p := i % len(s.ids)
	resp, err := s.d.rt.CreateContainer(ctxT(s.b, time.Minute), &runtimeapi.CreateContainerRequest{
		PodSandboxId: s.ids[p], Config: containerConfig(fmt.Sprintf("x%d", i), "true"), SandboxConfig: s.cfgs[p],
	})
	if err != nil {
		return err
	}
	_, err = s.d.rt.StartContainer(ctxT(s.b, time.Minute), &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId})
	return err
}

// mark logs ketchd's footprint and the pods' at n pods, and the start
// latencies since the last mark.
func (s *scaleRun) mark(n int) {
	b, pid := s.b, s.d.cmd.Process.Pid
	rss, _ := memoryOf(b, pid)
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var podRSS, podPSS float64
	procs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, c := range procs {
		comm, _ := os.ReadFile(c)
		if name := strings.TrimSpace(string(comm)); name == "ketch-shim" || name == "ketch-init" {
			var pid int
			if _, err := fmt.Sscanf(c, "/proc/%d/comm", &pid); err == nil {
				// A process gone since the glob counts as nothing.
				r, p, _ := readMemory(pid)
				podRSS, podPSS = podRSS+r, podPSS+p
			}
		}
	}
	line := fmt.Sprintf("%5d pods: ketchd %d threads, %.0f goroutines, RSS %.1f MiB, %d fds",
		n, threads(b, pid), s.d.scrape(b)["go_goroutines"], rss, len(fds))
	if n > 0 {
		line += fmt.Sprintf("; per pod: shim+init RSS %.0f KiB, PSS %.0f KiB", podRSS*1024/float64(n), podPSS*1024/float64(n))
	}
	s.mu.Lock()
	for _, l := range []struct {
		what string
		ds   []time.Duration
	}{{"RunPodSandbox", s.run}, {"CreateContainer", s.create}, {"StartContainer", s.start}} {
		if len(l.ds) > 0 {
			slices.Sort(l.ds)
			line += fmt.Sprintf("; %s p50 %v p99 %v", l.what, l.ds[len(l.ds)/2].Round(time.Millisecond), l.ds[len(l.ds)*99/100].Round(time.Millisecond))
		}
	}
	s.run, s.create, s.start = nil, nil, nil
	s.mu.Unlock()
	b.Log(line)
	if n > 0 {
		s.lists(fmt.Sprintf("%d pods", n))
		if bb, ok := b.(*testing.B); ok {
			bb.ReportMetric(rss*1024, fmt.Sprintf("ketchd-RSS-KiB@%d", n))
		}
	}
}

// lists logs the best of five of each list call. ListContainerStats is
// timed twice: read on demand (the first call, before any stats round has
// read the containers twice), and answered from the stats cache once every
// figure has its CPU rate, as kubelet finds it every 10 s.
func (s *scaleRun) lists(at string) {
	b, rt := s.b, s.d.rt
	best := func(f func() error) time.Duration {
		var min time.Duration
		for range 5 {
			t0 := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			if d := time.Since(t0); min == 0 || d < min {
				min = d
			}
		}
		return min
	}
	pods := best(func() error {
		_, err := rt.ListPodSandbox(ctxT(b, time.Minute), &runtimeapi.ListPodSandboxRequest{})
		return err
	})
	ctrs := best(func() error {
		_, err := rt.ListContainers(ctxT(b, time.Minute), &runtimeapi.ListContainersRequest{})
		return err
	})
	var rated bool
	listStats := func() error {
		resp, err := rt.ListContainerStats(ctxT(b, time.Minute), &runtimeapi.ListContainerStatsRequest{})
		rated = err == nil && !slices.ContainsFunc(resp.GetStats(), func(st *runtimeapi.ContainerStats) bool { return st.Cpu.GetUsageNanoCores() == nil })
		return err
	}
	t0 := time.Now()
	if err := listStats(); err != nil {
		b.Fatal(err)
	}
	onDemand := time.Since(t0)
	for deadline := time.Now().Add(2 * time.Minute); !rated; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			b.Fatal("ListContainerStats: not every container has a CPU rate 2 min on")
		}
		if err := listStats(); err != nil {
			b.Fatal(err)
		}
	}
	cached := best(listStats)
	b.Logf("%s: ListPodSandbox %v, ListContainers %v, ListContainerStats %v at the first call, %v from the stats cache", at,
		pods.Round(time.Microsecond*100), ctrs.Round(time.Microsecond*100), onDemand.Round(time.Microsecond*100), cached.Round(time.Microsecond*100))
	b.Logf("the last stats rounds:\n%s", s.d.log.last("stats round", 3))
}
