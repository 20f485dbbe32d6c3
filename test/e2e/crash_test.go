//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCrash runs cycles of random CRI work (pods and containers created,
// started, stopped and removed, execs, pulls) cut short by kill -9 of
// ketchd at a random moment, in some cycles after a kill -9 of a pod's
// shim or ketch-init; after each restart it checks that what the CRI
// reports is what the host holds, that exit codes are true, that every
// log holds its numbered lines in order and none twice, and that results
// match the logs. `make test` runs a few cycles, `make crashtest` many
// (KETCH_CRASH_CYCLES); KETCH_CRASH_SEED replays a run.
func TestCrash(t *testing.T) {
	cycles := envInt("KETCH_CRASH_CYCLES", 4)
	seed, _ := strconv.ParseUint(envOr("KETCH_CRASH_SEED", strconv.FormatInt(time.Now().UnixNano(), 10)), 10, 64)
	t.Logf("KETCH_CRASH_SEED=%d KETCH_CRASH_CYCLES=%d", seed, cycles)
	c := &crashTest{
		t:         t,
		rng:       rand.New(rand.NewPCG(seed, seed>>1)),
		logs:      t.TempDir(),
		pods:      map[string]*crashPod{},
		ctrs:      map[string]*crashCtr{},
		images:    map[string]bool{},
		deadShims: map[string]bool{},
	}
	d := startKetchd(t, daemonOpts{network: true, extra: "[workflow]\nkill_grace = \"1s\""})
	d.mustPull(t, busybox)
	found := 0
	for cycle := 1; cycle <= cycles; cycle++ {
		d = c.cycle(t, d)
		bad := c.settle(d)
		for _, b := range bad {
			t.Errorf("cycle %d: %s", cycle, b)
		}
		found += len(bad)
	}
	d.removeAllPods(t)
	d.checkNothingLeft(t)
	d.checkNoContainerLeft(t)
	t.Logf("crash test: %d cycles (kill -9 of ketchd in each, of a shim in %d, of a ketch-init in %d), %d inconsistencies; %d pods and %d containers checked, %d calls cut short",
		cycles, c.shims, c.inits, found, len(c.pods), len(c.ctrs), c.cut.Load())
}

// crashTest is the test's model of what it asked for. The workers of a
// cycle share it; the checker runs alone.
type crashTest struct {
	t            *testing.T // for helpers that take one; never failed from a worker
	logs         string
	cut          atomic.Int64 // calls that failed because their ketchd was killed
	shims, inits int          // kill -9s of pods' shims and ketch-inits; only the main goroutine

	mu     sync.Mutex
	rng    *rand.Rand           // guarded by mu
	seq    int                  // guarded by mu
	pods   map[string]*crashPod // by name; guarded by mu
	ctrs   map[string]*crashCtr // by name; guarded by mu
	images map[string]bool      // pulled refs; guarded by mu
	errs   []string             // calls that failed for no reason; guarded by mu
	// deadShims are the shims killed, by ID, and shimKills counts them;
	// guarded by mu. Every pod a shim served is hurt by its death.
	deadShims map[string]bool
	shimKills int
}

// crashPod and crashCtr say what was asked of an object (…Asked, set before
// the call) and what was answered (set after it); the ID is known once the
// create answered or a restarted ketchd lists it. Their fields are guarded
// by crashTest.mu.
type crashPod struct {
	name, id               string
	cfg                    *runtimeapi.PodSandboxConfig
	stopAsked, stopped     bool
	removeAsked, gone      bool
	shimKilled, initKilled bool
	noInit                 bool // kubelet's default: a PID namespace per container, no ketch-init
}

type crashCtr struct {
	name, id    string
	pod         *crashPod
	sleeper     bool  // sleeps for ever (exec target); else counts lines and exits
	lines       int   // a counter prints 1..lines, one a millisecond
	code        int32 // then exits with code
	result      bool  // ketch.dev/result: stdout
	withInit    bool  // ketch.dev/init: true
	startAsked  bool
	started     bool
	stopAsked   bool
	removeAsked bool
	gone        bool
}

// hurt: a pod that lost its shim or ketch-init: calls on it may fail.
func (p *crashPod) hurt() bool { return p.shimKilled || p.initKilled }

func (c *crashTest) intn(n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rng.IntN(n)
}

// cycle runs three workers against d, kills ketchd (and maybe a shim or
// a ketch-init first) at random moments, and returns the restarted ketchd.
func (c *crashTest) cycle(t *testing.T, d *daemon) *daemon {
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				c.step(d, &stop)
			}
		}()
	}
	time.Sleep(time.Duration(200+c.intn(1500)) * time.Millisecond)
	switch c.intn(3) {
	case 1:
		c.killVictim(d, true)
	case 2:
		c.killVictim(d, false)
	}
	time.Sleep(time.Duration(c.intn(800)) * time.Millisecond)
	stop.Store(true)
	d.kill(t)
	wg.Wait()
	return restart(t, d)
}

// killVictim kills -9 the shim or the ketch-init of a random ready pod.
func (c *crashTest) killVictim(d *daemon, shim bool) {
	c.mu.Lock()
	var p *crashPod
	for _, q := range c.sortedPods() {
		if q.id != "" && !q.stopAsked && !q.hurt() && (shim || !q.noInit) && (p == nil || c.rng.IntN(2) == 0) {
			p = q
		}
	}
	if p == nil {
		c.mu.Unlock()
		return
	}
	p.shimKilled, p.initKilled = shim, !shim
	var pid int
	if shim {
		// The shim serves a group of pods: each loses its containers.
		pid = d.shimPID(p.id)
		c.shimKills++
		if sid := d.shimOf(p.id); sid != "" {
			c.deadShims[sid] = true
			for _, q := range c.pods {
				if q.id != "" && d.shimOf(q.id) == sid {
					q.shimKilled = true
				}
			}
		}
	}
	c.mu.Unlock()
	if !shim {
		pid, _ = d.initPID(p.id)
	}
	if pid > 0 && syscall.Kill(pid, syscall.SIGKILL) == nil {
		if shim {
			c.shims++
		} else {
			c.inits++
		}
	}
}

// sortedPods and sortedCtrs are the model in a fixed order, so a seed
// replays the same choices. c.mu must be held.
func (c *crashTest) sortedPods() []*crashPod {
	var ps []*crashPod
	for _, p := range c.pods {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *crashPod) int { return strings.Compare(a.name, b.name) })
	return ps
}

func (c *crashTest) sortedCtrs() []*crashCtr {
	var cs []*crashCtr
	for _, x := range c.ctrs {
		cs = append(cs, x)
	}
	slices.SortFunc(cs, func(a, b *crashCtr) int { return strings.Compare(a.name, b.name) })
	return cs
}

// pick is a random element of xs that ok accepts, or nil. c.mu must be held.
func pick[T any](c *crashTest, xs []*T, ok func(*T) bool) *T {
	var good []*T
	for _, x := range xs {
		if ok(x) {
			good = append(good, x)
		}
	}
	if len(good) == 0 {
		return nil
	}
	return good[c.rng.IntN(len(good))]
}

// step makes one random call. A failure is expected only when the call's
// ketchd was killed, or its target was being stopped or removed by
// another worker, or lost its shim or ketch-init.
func (c *crashTest) step(d *daemon, stop *atomic.Bool) {
	c.mu.Lock()
	live := 0
	for _, p := range c.pods {
		if !p.removeAsked {
			live++
		}
	}
	op := c.rng.IntN(20)
	switch {
	case live < 2:
		op = 0
	case live >= 5 && op == 0:
		op = 18
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	failed := func(what string, err error, expected func() bool) {
		if err == nil {
			return
		}
		c.mu.Lock()
		ok := expected()
		c.mu.Unlock()
		switch {
		case stop.Load():
			c.cut.Add(1)
		case !ok:
			// Workers do not fail the test themselves: the checker reports.
			c.mu.Lock()
			c.errs = append(c.errs, fmt.Sprintf("%s: %v", what, err))
			c.mu.Unlock()
		}
	}
	switch {
	case op == 0:
		c.runPod(ctx, d, failed)
	case op <= 8:
		c.runContainer(ctx, d, failed)
	case op <= 11:
		c.exec(ctx, d, failed)
	case op <= 13:
		c.mu.Lock()
		x := pick(c, c.sortedCtrs(), func(x *crashCtr) bool { return x.id != "" && x.startAsked && !x.removeAsked })
		if x != nil {
			x.stopAsked = true
		}
		c.mu.Unlock()
		if x != nil {
			_, err := d.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: x.id, Timeout: int64(c.intn(2))})
			failed("StopContainer "+x.name, err, func() bool { return x.pod.hurt() || x.removeAsked })
		}
	case op <= 15:
		c.mu.Lock()
		x := pick(c, c.sortedCtrs(), func(x *crashCtr) bool { return x.id != "" && !x.removeAsked })
		if x != nil {
			x.removeAsked, x.stopAsked = true, true
		}
		c.mu.Unlock()
		if x != nil {
			_, err := d.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: x.id})
			failed("RemoveContainer "+x.name, err, func() bool { return x.pod.hurt() })
			if err == nil {
				c.mu.Lock()
				x.gone = true
				c.mu.Unlock()
			}
		}
	case op <= 16:
		c.mu.Lock()
		p := pick(c, c.sortedPods(), func(p *crashPod) bool { return p.id != "" && !p.stopAsked })
		if p != nil {
			c.askStop(p)
		}
		c.mu.Unlock()
		if p != nil {
			_, err := d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.id})
			failed("StopPodSandbox "+p.name, err, func() bool { return false })
			if err == nil {
				c.mu.Lock()
				p.stopped = true
				c.mu.Unlock()
			}
		}
	case op <= 18:
		c.mu.Lock()
		p := pick(c, c.sortedPods(), func(p *crashPod) bool { return p.id != "" && !p.removeAsked })
		if p != nil {
			c.askStop(p)
			p.removeAsked = true
			for _, x := range c.ctrs {
				if x.pod == p {
					x.removeAsked = true
				}
			}
		}
		c.mu.Unlock()
		if p != nil {
			_, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.id})
			failed("RemovePodSandbox "+p.name, err, func() bool { return false })
			if err == nil {
				c.mu.Lock()
				p.gone = true
				c.mu.Unlock()
			}
		}
	default:
		ref := []string{busybox, multilayer}[c.intn(2)]
		if _, err := d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec(ref)}); err == nil {
			c.mu.Lock()
			c.images[ref] = true
			c.mu.Unlock()
		} else {
			failed("PullImage "+ref, err, func() bool { return false })
		}
	}
}

// askStop records that pod p and its containers are being stopped. c.mu
// must be held.
func (c *crashTest) askStop(p *crashPod) {
	p.stopAsked = true
	for _, x := range c.ctrs {
		if x.pod == p {
			x.stopAsked = true
		}
	}
}

type failFunc func(what string, err error, expected func() bool)

func (c *crashTest) runPod(ctx context.Context, d *daemon, failed failFunc) {
	c.mu.Lock()
	c.seq++
	p := &crashPod{name: fmt.Sprintf("crash-p%d", c.seq)}
	c.pods[p.name] = p
	c.mu.Unlock()
	p.cfg = podConfig(c.t, p.name)
	if p.noInit = c.intn(2) == 0; p.noInit {
		kubeletPod(p.cfg)
	}
	p.cfg.LogDirectory = filepath.Join(c.logs, p.name)
	if err := os.MkdirAll(p.cfg.LogDirectory, 0o755); err != nil {
		failed("log directory", err, func() bool { return false })
		return
	}
	c.mu.Lock()
	kills := c.shimKills
	c.mu.Unlock()
	resp, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: p.cfg})
	// A shim killed meanwhile may be the one the pod went to.
	failed("RunPodSandbox "+p.name, err, func() bool { return c.shimKills != kills })
	if err == nil {
		c.mu.Lock()
		p.id = resp.PodSandboxId
		// Placed in a shim killed before its ID was known here.
		p.shimKilled = c.deadShims[d.shimOf(p.id)]
		c.mu.Unlock()
	}
}

// runContainer creates and starts a counter (printing numbered lines, then
// exiting with a code of its own; some with their stdout as the result)
// or a sleeper, some under ketch-init.
func (c *crashTest) runContainer(ctx context.Context, d *daemon, failed failFunc) {
	c.mu.Lock()
	p := pick(c, c.sortedPods(), func(p *crashPod) bool {
		n := 0
		for _, x := range c.ctrs {
			if x.pod == p && !x.removeAsked {
				n++
			}
		}
		return p.id != "" && !p.stopAsked && !p.hurt() && n < 4
	})
	if p == nil {
		c.mu.Unlock()
		return
	}
	c.seq++
	x := &crashCtr{name: fmt.Sprintf("crash-c%d", c.seq), pod: p, sleeper: c.rng.IntN(4) == 0,
		lines: 200 + c.rng.IntN(1300), code: int32(1 + c.rng.IntN(120)), result: c.rng.IntN(2) == 0}
	x.withInit = c.rng.IntN(3) == 0
	c.ctrs[x.name] = x
	c.mu.Unlock()
	cmd := []string{"sleep", "3600"}
	if !x.sleeper {
		cmd = []string{"sh", "-c", fmt.Sprintf("i=1; while [ $i -le %d ]; do echo $i; i=$((i+1)); usleep 1000; done; exit %d", x.lines, x.code)}
	}
	cfg := containerConfig(x.name, cmd...)
	cfg.Annotations = map[string]string{}
	if x.withInit {
		cfg.Annotations["ketch.dev/init"] = "true"
	}
	if x.result && !x.sleeper {
		cfg.Annotations["ketch.dev/result"] = "stdout"
	}
	hurt := func() bool { return p.hurt() || p.stopAsked || x.stopAsked }
	resp, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.id, Config: cfg, SandboxConfig: p.cfg})
	failed("CreateContainer "+x.name, err, hurt)
	if err != nil {
		return
	}
	c.mu.Lock()
	x.id = resp.ContainerId
	x.startAsked = true
	c.mu.Unlock()
	_, err = d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: x.id})
	failed("StartContainer "+x.name, err, hurt)
	if err == nil {
		c.mu.Lock()
		x.started = true
		c.mu.Unlock()
	}
}

// exec runs echo in a running sleeper and checks what comes back.
func (c *crashTest) exec(ctx context.Context, d *daemon, failed failFunc) {
	c.mu.Lock()
	x := pick(c, c.sortedCtrs(), func(x *crashCtr) bool { return x.sleeper && x.started && !x.stopAsked })
	token := fmt.Sprintf("token-%d", c.rng.Int())
	c.mu.Unlock()
	if x == nil {
		return
	}
	resp, err := d.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: x.id, Cmd: []string{"echo", token}, Timeout: 10})
	if err == nil && (string(resp.Stdout) != token+"\n" || resp.ExitCode != 0) {
		err = fmt.Errorf("stdout %q, stderr %q, exit %d; want %q, 0", resp.Stdout, resp.Stderr, resp.ExitCode, token)
	}
	// A stop under way kills the exec too.
	failed("ExecSync in "+x.name, err, func() bool { return x.pod.hurt() || x.stopAsked })
}

// settle checks until the checker finds nothing or 15 s have passed (an
// exit or a NOTREADY a watcher is about to record is not an
// inconsistency), and returns what the last check found.
func (c *crashTest) settle(d *daemon) []string {
	deadline := time.Now().Add(15 * time.Second)
	for {
		bad := c.check(d)
		if len(bad) == 0 || time.Now().After(deadline) {
			c.forgetUnanswered()
			return bad
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// forgetUnanswered drops from the model the creates that were cut short
// and undone, and the errors workers noted.
func (c *crashTest) forgetUnanswered() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, p := range c.pods {
		if p.id == "" {
			delete(c.pods, k)
		}
	}
	for k, x := range c.ctrs {
		if x.id == "" {
			delete(c.ctrs, k)
		}
	}
	c.errs = nil
}

// check compares what the CRI reports with the model and with the host.
func (c *crashTest) check(d *daemon) []string {
	var bad []string
	badf := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods, err := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return []string{fmt.Sprintf("ListPodSandbox: %v", err)}
	}
	ctrs, err := d.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return []string{fmt.Sprintf("ListContainers: %v", err)}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.errs {
		badf("a call failed for no reason: %s", e)
	}
	listedPods := map[string]bool{}
	for _, sb := range pods.Items {
		listedPods[sb.Id] = true
		p := c.pods[sb.Metadata.GetName()]
		switch {
		case p == nil:
			badf("pod %s (%s) is listed but was never asked for", sb.Id, sb.Metadata.GetName())
			continue
		case p.id == "":
			p.id = sb.Id // made, but the answer was lost with ketchd
		case p.id != sb.Id:
			badf("pod %s is listed as %s, made as %s", p.name, sb.Id, p.id)
		}
		if c.deadShims[d.shimOf(p.id)] {
			p.shimKilled = true // placed in it as it was killed
		}
		if p.gone {
			badf("pod %s is listed after it was removed", p.name)
		}
		netnsPin := filepath.Join(d.state, "netns", sb.Id)
		switch sb.State {
		case runtimeapi.PodSandboxState_SANDBOX_READY:
			if p.stopped || p.hurt() {
				badf("pod %s is READY after it was stopped or lost its shim or init (stopped %v, shim killed %v, init killed %v)", p.name, p.stopped, p.shimKilled, p.initKilled)
			}
			if p.noInit {
				if pid := d.shimPID(sb.Id); !alive(pid) {
					badf("pod %s is READY but its shim (%d) is not running", p.name, pid)
				}
			} else if pid, err := d.initPID(sb.Id); err != nil || !alive(pid) {
				badf("pod %s is READY but its ketch-init (%d, %v) is not running", p.name, pid, err)
			}
			if _, err := os.Stat(netnsPin); err != nil {
				badf("pod %s is READY without its netns pin: %v", p.name, err)
			}
		default:
			if !p.stopAsked && !p.hurt() {
				badf("pod %s is %v though nothing stopped it", p.name, sb.State)
			}
		}
	}
	for _, p := range c.sortedPods() {
		if p.id != "" && !p.removeAsked && !listedPods[p.id] {
			badf("pod %s (%s) is no longer listed", p.name, p.id)
		}
	}
	for _, dir := range []string{"pods", "netns"} {
		ents, _ := os.ReadDir(filepath.Join(d.state, dir))
		for _, e := range ents {
			if !listedPods[e.Name()] {
				badf("%s/%s belongs to no listed pod", dir, e.Name())
			}
		}
	}
	listedCtrs := map[string]bool{}
	for _, ct := range ctrs.Containers {
		listedCtrs[ct.Id] = true
		x := c.ctrs[ct.Metadata.GetName()]
		switch {
		case x == nil:
			badf("container %s (%s) is listed but was never asked for", ct.Id, ct.Metadata.GetName())
			continue
		case x.id == "":
			x.id = ct.Id
		case x.id != ct.Id:
			badf("container %s is listed as %s, made as %s", x.name, ct.Id, x.id)
		}
		bad = append(bad, c.checkContainer(ctx, d, x, ct, listedPods)...)
	}
	for _, x := range c.sortedCtrs() {
		if x.id != "" && !x.removeAsked && !listedCtrs[x.id] {
			badf("container %s (%s) is no longer listed", x.name, x.id)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(d.state, "containers"))
	for _, e := range ents {
		if !listedCtrs[e.Name()] {
			badf("containers/%s belongs to no listed container", e.Name())
		}
	}
	// Mounts and cgroups are named by the pod or container they belong to.
	listed := func(id string) bool { return listedPods[id] || listedCtrs[id] }
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[4], d.state+"/") {
			continue
		}
		rel := strings.Split(strings.TrimPrefix(f[4], d.state+"/"), "/")
		if len(rel) >= 2 && !listed(rel[1]) {
			badf("mount %s belongs to no listed pod or container", f[4])
		}
	}
	for _, mnt := range cgroupMounts() {
		cgs, _ := filepath.Glob(filepath.Join(mnt, cgroupParent, "*", "cgroup.procs"))
		for _, cg := range cgs {
			if id := filepath.Base(filepath.Dir(cg)); !listed(id) {
				badf("cgroup %s belongs to no listed pod or container", filepath.Dir(cg))
			}
		}
	}
	for ref := range c.images {
		if resp, err := d.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: spec(ref)}); err != nil || resp.Image == nil {
			badf("image %s was pulled but is not there (%v)", ref, err)
		}
	}
	return bad
}

// checkContainer checks one listed container against its model and the
// host: its state against its process, its exit code, its log and result.
// c.mu is held.
func (c *crashTest) checkContainer(ctx context.Context, d *daemon, x *crashCtr, ct *runtimeapi.Container, listedPods map[string]bool) []string {
	var bad []string
	badf := func(format string, args ...any) {
		bad = append(bad, fmt.Sprintf("container %s (%s of pod %s): ", x.name, ct.State, x.pod.name)+fmt.Sprintf(format, args...))
	}
	if x.gone {
		badf("listed after it was removed")
	}
	if !listedPods[ct.PodSandboxId] {
		badf("its pod %s is not listed", ct.PodSandboxId)
	}
	if _, err := os.Stat(filepath.Join(d.state, "containers", ct.Id, "rootfs")); err != nil {
		badf("no rootfs: %v", err)
	}
	resp, err := d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ct.Id, Verbose: true})
	if err != nil {
		badf("ContainerStatus: %v", err)
		return bad
	}
	st := resp.Status
	var info struct {
		PID    int     `json:"pid"`
		Result *[]byte `json:"result"`
	}
	_ = json.Unmarshal([]byte(resp.Info["info"]), &info)
	switch st.State {
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		if x.started {
			badf("CREATED after StartContainer answered")
		}
		if pids := processesOf(ct.Id); len(pids) > 0 {
			badf("CREATED but processes %v run", pids)
		}
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		if !x.startAsked {
			badf("RUNNING though never started")
		}
		if x.pod.shimKilled {
			badf("RUNNING after its pod's shim was killed")
		}
		if cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", info.PID)); !alive(info.PID) || !strings.Contains(string(cg), ct.Id) {
			badf("RUNNING but its process %d is gone", info.PID)
		}
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		if pids := processesOf(ct.Id); len(pids) > 0 {
			badf("EXITED (%s) but processes %v run", st.Reason, pids)
		}
		checkExit(x, st, info.Result, badf)
	default:
		badf("state %v", st.State)
	}
	return bad
}

// checkExit: the exit code is the program's own unless it was stopped
// (137, or 143 for a program that took TERM) or its shim died (255,
// reason ShimDied); the log holds lines 1..k in order, all of them when
// the program finished; the result is the log's stdout.
func checkExit(x *crashCtr, st *runtimeapi.ContainerStatus, result *[]byte, badf func(string, ...any)) {
	natural := !x.sleeper && st.ExitCode == x.code
	switch {
	case st.Reason == "ShimDied":
		if !x.pod.shimKilled || st.ExitCode != 255 {
			badf("reason ShimDied, exit %d, though its shim was not killed", st.ExitCode)
		}
	case st.Reason == "StartError":
		if !x.pod.hurt() && !x.pod.stopAsked {
			badf("StartError: %s", st.Message)
		}
		return
	case natural:
	case x.stopAsked && (st.ExitCode == 137 || st.ExitCode == 143):
	default:
		badf("exit code %d (%s %q), want %d%s; init %v, pod's shim killed %v, init killed %v", st.ExitCode, st.Reason, st.Message, x.code,
			map[bool]string{true: " or 137/143 (stopped)"}[x.stopAsked], x.withInit, x.pod.shimKilled, x.pod.initKilled)
	}
	if x.sleeper {
		return
	}
	lines, stdout, err := numberedLines(filepath.Join(x.pod.cfg.LogDirectory, x.name+".log"))
	if errors.Is(err, os.ErrNotExist) && st.StartedAt == 0 {
		err = nil // it never ran: its shim died first
	}
	if err != nil {
		badf("log: %v", err)
		return
	}
	if natural && lines != x.lines {
		badf("exited with its own code %d but its log has %d of its %d lines", x.code, lines, x.lines)
	}
	var got []byte // an empty result is left out of the info
	if result != nil {
		got = *result
	}
	if x.result && st.Reason != "ShimDied" && string(got) != stdout {
		badf("result is %d bytes, want the %d bytes of its log's stdout", len(got), len(stdout))
	}
}

// numberedLines reads a counter's CRI log: every line must be a full
// stdout line holding the next number. It returns how many there are and
// the stdout they make.
func numberedLines(path string) (int, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	var out strings.Builder
	n := 0
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.SplitN(s.Text(), " ", 4)
		if len(fields) != 4 || fields[1] != "stdout" || fields[2] != "F" {
			return n, "", fmt.Errorf("line %d is not a full stdout line: %q", n+1, s.Text())
		}
		if _, err := time.Parse(time.RFC3339Nano, fields[0]); err != nil {
			return n, "", fmt.Errorf("line %d: %v", n+1, err)
		}
		if fields[3] != strconv.Itoa(n+1) {
			return n, "", fmt.Errorf("line %d holds %q: a line is lost or doubled", n+1, fields[3])
		}
		n++
		out.WriteString(fields[3] + "\n")
	}
	return n, out.String(), s.Err()
}
