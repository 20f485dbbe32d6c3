//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// comparePods is the density run's pod count: kubelet's default maxPods.
const comparePods = 110

// comparedRuntime is one runtime of `make compare`: how to start it, and
// which of its processes serve each pod (the daemon excluded, the pods'
// own programs too).
type comparedRuntime struct {
	name  string
	start func(b *testing.B) (d *daemon, daemonPID int, perPod func() []int)
}

var comparedRuntimes = []comparedRuntime{
	{"ketch", func(b *testing.B) (*daemon, int, func() []int) {
		d := startKetchd(b, daemonOpts{network: true})
		return d, d.cmd.Process.Pid, func() []int { return runtimeProcesses(d.state, "ketch-shim", "ketch-init") }
	}},
	{"containerd", func(b *testing.B) (*daemon, int, func() []int) {
		p := startContainerd(b)
		// comm is cut to 15 bytes: containerd-shim-runc-v2 reads containerd-shim.
		return dialCRI(b, p.endpoint), p.pid, func() []int { return runtimeProcesses(p.dir, "containerd-shim", "pause") }
	}},
	{"crio", func(b *testing.B) (*daemon, int, func() []int) {
		p := startCRIO(b)
		return dialCRI(b, p.endpoint), p.pid, func() []int { return runtimeProcesses(p.dir, "conmon", "pause") }
	}},
}

// comparison is what one runtime measured in `make compare`.
type comparison struct {
	critest         map[string]float64 // "<benchmark>: <operation>" -> p50 ms
	critestOps      []string           // its keys in critest's order
	start, teardown time.Duration      // comparePods pods to running; all stopped and removed
	rss, pss        float64            // KiB a pod, of the runtime's processes that serve pods
	daemonRSS       float64            // MiB, with comparePods pods
	execSync, pull5 time.Duration      // p50s
	perPodProcesses float64            // processes a pod
}

// BenchmarkCompare is `make compare`: ketch, containerd 1.6 and CRI-O
// 1.36, one after another in one run, through the same workloads: critest
// -benchmark; comparePods pods of one sleeping container, started 10 at a
// time, with the memory of each runtime's processes that serve pods (shims, conmons, pauses); ExecSync's
// round trip; the pull of a 5-layer image. Then one table of the figures
// and ketch's ratios to each peer (below 1: ketch is faster or smaller).
// KETCH_COMPARE names a subset ("ketch,crio").
func BenchmarkCompare(b *testing.B) {
	only := os.Getenv("KETCH_COMPARE")
	results := map[string]*comparison{}
	var names []string
	for _, rt := range comparedRuntimes {
		if only != "" && !slices.Contains(strings.Split(only, ","), rt.name) {
			continue
		}
		names = append(names, rt.name)
		b.Run(rt.name, func(b *testing.B) {
			for b.Loop() {
				d, daemonPID, perPod := rt.start(b)
				results[rt.name] = compare(b, d, daemonPID, perPod)
			}
		})
	}
	if len(results) > 0 {
		fmt.Print(compareTable(names, results))
	}
}

func compare(b *testing.B, d *daemon, daemonPID int, perPod func() []int) *comparison {
	c := &comparison{}
	c.critest, c.critestOps = critestBenchmark(b, d)
	d.mustPull(b, busybox)

	// Density: comparePods pods of one container each, 10 at a time, as
	// kubelet sends them by default (no shared PID namespace: CRI-O then
	// runs no infra container, and ketch no ketch-init).
	logs := b.TempDir()
	ids, ctrs := make([]string, comparePods), make([]string, comparePods)
	t0 := time.Now()
	inParallel(b, 10, 0, comparePods, func(i int) error {
		cfg := kubeletPod(podConfig(b, fmt.Sprintf("cmp-%d", i)))
		cfg.LogDirectory = filepath.Join(logs, strconv.Itoa(i)) // kubelet makes it
		if err := os.Mkdir(cfg.LogDirectory, 0o755); err != nil {
			return err
		}
		resp, err := d.rt.RunPodSandbox(ctxT(b, time.Minute), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			return err
		}
		ids[i] = resp.PodSandboxId
		ctr, err := d.rt.CreateContainer(ctxT(b, time.Minute), &runtimeapi.CreateContainerRequest{
			PodSandboxId: ids[i], Config: comparedContainer("app", "sleep", "36000"), SandboxConfig: cfg,
		})
		if err != nil {
			return err
		}
		ctrs[i] = ctr.ContainerId
		_, err = d.rt.StartContainer(ctxT(b, time.Minute), &runtimeapi.StartContainerRequest{ContainerId: ctrs[i]})
		return err
	})
	c.start = time.Since(t0)
	time.Sleep(2 * time.Second) // let the Go runtimes among them settle after start-up
	pids := perPod()
	for _, pid := range pids {
		rss, pss, err := readMemory(pid)
		if err != nil {
			b.Fatalf("memory of %d: %v", pid, err)
		}
		c.rss, c.pss = c.rss+rss*1024/comparePods, c.pss+pss*1024/comparePods
	}
	c.perPodProcesses = float64(len(pids)) / comparePods
	if len(pids) == 0 {
		b.Fatalf("no runtime process found for %d pods", comparePods)
	}
	c.daemonRSS, _ = memoryOf(b, daemonPID)
	t0 = time.Now()
	// As kubelet does it, with no grace period: sleep, as PID 1, ignores TERM.
	inParallel(b, 10, 0, comparePods, func(i int) error {
		if _, err := d.rt.StopContainer(ctxT(b, time.Minute), &runtimeapi.StopContainerRequest{ContainerId: ctrs[i]}); err != nil {
			return err
		}
		if _, err := d.rt.StopPodSandbox(ctxT(b, time.Minute), &runtimeapi.StopPodSandboxRequest{PodSandboxId: ids[i]}); err != nil {
			return err
		}
		_, err := d.rt.RemovePodSandbox(ctxT(b, time.Minute), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: ids[i]})
		return err
	})
	c.teardown = time.Since(t0)
	if left := perPod(); len(left) > 0 {
		b.Fatalf("per-pod processes left after every pod was removed: %v", left)
	}

	// ExecSync's round trip.
	cfg := kubeletPod(podConfig(b, "cmp-exec"))
	cfg.LogDirectory = b.TempDir()
	pod := d.runPod(b, cfg)
	ctr := d.createContainer(b, pod, cfg, comparedContainer("target", "sleep", "3600"))
	d.startContainer(b, ctr)
	var took []time.Duration
	for range 50 {
		t0 := time.Now()
		resp, err := d.rt.ExecSync(ctxT(b, 10*time.Second), &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"true"}, Timeout: 5})
		if err != nil || resp.ExitCode != 0 {
			b.Fatalf("ExecSync true: %v, %v", resp, err)
		}
		took = append(took, time.Since(t0))
	}
	c.execSync = p50(took)
	d.stopPod(b, pod)
	d.removePod(b, pod)

	// A 5-layer image, pulled and removed 10 times.
	took = took[:0]
	for range 10 {
		t0 := time.Now()
		d.mustPull(b, multilayer)
		took = append(took, time.Since(t0))
		d.remove(b, multilayer)
	}
	c.pull5 = p50(took)
	return c
}

// comparedContainer is containerConfig with the image named as kubelet
// names it for CRI-O's signature policy.
func comparedContainer(name string, cmd ...string) *runtimeapi.ContainerConfig {
	c := containerConfig(name, cmd...)
	c.Image.UserSpecifiedImage = c.Image.Image
	return c
}

func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// dialCRI is a client of a peer's CRI endpoint, closed when the test ends.
func dialCRI(tb testing.TB, endpoint string) *daemon {
	d := &daemon{socket: strings.TrimPrefix(endpoint, "unix://")}
	d.dial(tb)
	tb.Cleanup(func() { d.conn.Close() })
	return d
}

// runtimeProcesses are the PIDs of the processes named root whose command
// line holds marker (a runtime's own directory), and of their children
// named child.
func runtimeProcesses(marker, root, child string) []int {
	type proc struct {
		comm string
		ppid int
	}
	procs := map[int]proc{}
	roots := map[int]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(stat)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		p := proc{comm: s[open+1 : end], ppid: ppid}
		procs[pid] = p
		if p.comm == root {
			if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmdline), marker) {
				roots[pid] = true
			}
		}
	}
	var pids []int
	for pid, p := range procs {
		if roots[pid] || (roots[p.ppid] && p.comm == child) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// critestBenchmark runs critest -benchmark against d, 50 samples of each
// lifecycle one at a time, and returns each operation's p50 in ms.
func critestBenchmark(b *testing.B, d *daemon) (map[string]float64, []string) {
	out := b.TempDir()
	img := "public.ecr.aws/docker/library/busybox"
	params := fmt.Sprintf(`containersNumber: 50
containersNumberParallel: 1
containerBenchmarkTimeoutSeconds: 180
podsNumber: 50
podsNumberParallel: 1
podBenchmarkTimeoutSeconds: 180
imagesNumber: 50
imagesNumberParallel: 1
imageBenchmarkTimeoutSeconds: 180
imagePullingBenchmarkImage: %[1]s:1.35.0-glibc
imageListingBenchmarkImages: [%[1]s:1-uclibc, %[1]s:1, %[1]s:1-glibc, %[1]s:1-musl]
`, img)
	paramsFile := filepath.Join(out, "params.yaml")
	if err := os.WriteFile(paramsFile, []byte(params), 0o644); err != nil {
		b.Fatal(err)
	}
	results := filepath.Join(out, "results")
	if err := os.Mkdir(results, 0o755); err != nil {
		b.Fatal(err)
	}
	ep := "unix://" + d.socket
	cmd := exec.Command(filepath.Join(cacheDir, "bin", "critest"), "-runtime-endpoint", ep, "-image-endpoint", ep,
		"-ginkgo.focus", "benchmark", "-ginkgo.no-color", "-benchmark",
		"-benchmarking-params-file", paramsFile, "-benchmarking-output-dir", results)
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("critest -benchmark: %v\n%s", err, tail(string(o), 40))
	}
	files, _ := filepath.Glob(filepath.Join(results, "*.json"))
	slices.Sort(files)
	p50s := map[string]float64{}
	var ops []string
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		var r struct {
			OperationsNames []string `json:"operationsNames"`
			Datapoints      []struct {
				OperationsDurationsNs []int64 `json:"operationsDurationsNs"`
			} `json:"datapoints"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			b.Fatalf("%s: %v", f, err)
		}
		for i, name := range r.OperationsNames {
			var ds []time.Duration
			for _, p := range r.Datapoints {
				if i < len(p.OperationsDurationsNs) {
					ds = append(ds, time.Duration(p.OperationsDurationsNs[i]))
				}
			}
			if len(ds) == 0 {
				continue
			}
			key := strings.TrimSuffix(filepath.Base(f), ".json") + ": " + name
			ops = append(ops, key)
			p50s[key] = float64(p50(ds).Microseconds()) / 1000
		}
	}
	if len(ops) == 0 {
		b.Fatalf("critest -benchmark wrote no results in %s", results)
	}
	return p50s, ops
}

// compareTable is one row a figure, one column a runtime, then ketch's
// ratio to each peer.
func compareTable(names []string, r map[string]*comparison) string {
	type row struct {
		what string
		of   func(c *comparison) float64
		unit string
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var rows []row
	for _, n := range names {
		if c := r[n]; c != nil {
			for _, op := range c.critestOps {
				rows = append(rows, row{"critest " + op, func(c *comparison) float64 { return c.critest[op] }, "ms"})
			}
			break
		}
	}
	rows = append(rows,
		row{fmt.Sprintf("%d pods: start wall", comparePods), func(c *comparison) float64 { return c.start.Seconds() }, "s"},
		row{fmt.Sprintf("%d pods: stop + remove wall", comparePods), func(c *comparison) float64 { return c.teardown.Seconds() }, "s"},
		row{"per pod: runtime processes RSS", func(c *comparison) float64 { return c.rss }, "KiB"},
		row{"per pod: runtime processes PSS", func(c *comparison) float64 { return c.pss }, "KiB"},
		row{"per pod: runtime processes", func(c *comparison) float64 { return c.perPodProcesses }, ""},
		row{fmt.Sprintf("daemon RSS, %d pods", comparePods), func(c *comparison) float64 { return c.daemonRSS }, "MiB"},
		row{"ExecSync round trip p50", func(c *comparison) float64 { return ms(c.execSync) }, "ms"},
		row{"pull of a 5-layer image p50", func(c *comparison) float64 { return ms(c.pull5) }, "ms"},
	)
	var sb strings.Builder
	sb.WriteString("| |")
	for _, n := range names {
		sb.WriteString(" " + n + " |")
	}
	for _, n := range names[1:] {
		sb.WriteString(" " + names[0] + " / " + n + " |")
	}
	sb.WriteString("\n|---|" + strings.Repeat("---|", 2*len(names)-1) + "\n")
	for _, rw := range rows {
		fmt.Fprintf(&sb, "| %s (%s) |", rw.what, rw.unit)
		for _, n := range names {
			if c := r[n]; c != nil {
				if v := rw.of(c); v >= 100 {
					fmt.Fprintf(&sb, " %.0f |", v)
				} else {
					fmt.Fprintf(&sb, " %.3g |", v)
				}
			} else {
				sb.WriteString(" - |")
			}
		}
		for _, n := range names[1:] {
			if c0, c := r[names[0]], r[n]; c0 != nil && c != nil && rw.of(c) != 0 {
				fmt.Fprintf(&sb, " %.2f |", rw.of(c0)/rw.of(c))
			} else {
				sb.WriteString(" - |")
			}
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// inParallel calls f(i) for i in [from, to) on n goroutines, and fails the
// benchmark with the first error once all are done.
func inParallel(tb testing.TB, n, from, to int, f func(int) error) {
	next := make(chan int)
	var (
		mu    sync.Mutex // guards first
		first error
		wg    sync.WaitGroup
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("#%d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		tb.Fatal(first)
	}
}
