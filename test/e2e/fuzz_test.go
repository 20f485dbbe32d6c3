//go:build e2e

package e2e

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestFuzzCRI sends random and mutated CRI requests, valid ones mixed in,
// at a live ketchd: KETCH_FUZZ_REQUESTS of them (1,000 by default; `make
// fuzz` sends 10,000), from KETCH_FUZZ_SEED (random when unset; logged).
// Every answer must carry a code a CRI client is told to expect; ketchd
// must still serve afterwards; and the host must hold nothing that no live
// record explains, nor anything at all once the pods are removed.
func TestFuzzCRI(t *testing.T) {
	n := envInt("KETCH_FUZZ_REQUESTS", 1000)
	seed := uint64(envInt("KETCH_FUZZ_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("%d requests, KETCH_FUZZ_SEED=%d", n, seed)
	d := startKetchd(t, daemonOpts{network: true})
	if _, err := d.pull(t, busybox, nil); err != nil {
		t.Fatal(err)
	}
	f := &fuzzer{t: t, d: d, r: rand.New(rand.NewPCG(seed, seed)), dir: t.TempDir(), codes: map[codes.Code]int{}}
	for i := range n {
		f.one(i)
		if i%100 == 99 {
			f.evict(100)
		}
	}
	t.Logf("answers by code: %v; pods made %d, containers made %d", f.codes, len(f.pods), len(f.ctrs))
	// A fuzzer that makes nothing real tests only the validation. How many
	// containers it makes varies with the seed (of 1,000 requests: 19 to
	// 27 in four runs, 8 with seed 647257186, where most creates named
	// pods gone already), so the bound is well below that.
	if len(f.pods) < n/100 || len(f.ctrs) < n/250 {
		t.Errorf("too few valid requests: the fuzzer made %d pods and %d containers of %d requests", len(f.pods), len(f.ctrs), n)
	}

	// Still serving: a pod and a container run as usual.
	pod, cfg, _ := d.podWithLogs(t, "after-fuzz")
	ctr := d.createContainer(t, pod, cfg, containerConfig("app", "sh", "-c", "echo ok"))
	d.startContainer(t, ctr)
	if st := d.waitExited(t, ctr, 30*time.Second); st.ExitCode != 0 {
		t.Errorf("a container after the fuzzing exited %d", st.ExitCode)
	}
	f.checkExplained()

	d.removeAllPods(t)
	for _, id := range append(f.pods, pod) {
		d.checkPodGone(t, id)
	}
	d.checkNoContainerLeft(t)
	checkBridgeEmpty(t)
	for _, sub := range []string{"pods", "containers", "netns"} {
		if ents, _ := os.ReadDir(filepath.Join(d.state, sub)); len(ents) > 0 {
			t.Errorf("%s/%s holds %d entries with no pod left", d.state, sub, len(ents))
		}
	}
}

type fuzzer struct {
	t     *testing.T
	d     *daemon
	r     *rand.Rand
	dir   string // the only place fuzzed host paths may point to
	pods  []string
	ctrs  []string
	codes map[codes.Code]int
}

// evict removes the oldest ready pods beyond max, as kubelet's maxPods
// bounds a node: the test network has 254 addresses.
func (f *fuzzer) evict(max int) {
	ready := f.d.pods(f.t, &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
	slices.SortFunc(ready, func(a, b *runtimeapi.PodSandbox) int { return cmp.Compare(a.CreatedAt, b.CreatedAt) })
	for len(ready) > max {
		f.d.removePod(f.t, ready[0].Id)
		ready = ready[1:]
	}
}

// allowed are the codes the CRI tells clients to expect of bad input, a
// missing object or a busy node.
var allowed = []codes.Code{codes.OK, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists,
	codes.FailedPrecondition, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Unimplemented}

func (f *fuzzer) one(i int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	what := ""
	switch k := f.r.IntN(14); k {
	case 0, 1:
		what = "RunPodSandbox"
		var resp *runtimeapi.RunPodSandboxResponse
		resp, err = f.d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: f.podConfig(i)})
		if err == nil {
			f.pods = append(f.pods, resp.PodSandboxId)
		}
	case 2, 3:
		what = "CreateContainer"
		var resp *runtimeapi.CreateContainerResponse
		resp, err = f.d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId: f.pick(f.pods), Config: f.containerConfig(i), SandboxConfig: f.podConfig(i)})
		if err == nil {
			f.ctrs = append(f.ctrs, resp.ContainerId)
		}
	case 4:
		what = "StartContainer"
		_, err = f.d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: f.pick(f.ctrs)})
	case 5:
		what = "StopContainer"
		_, err = f.d.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: f.pick(f.ctrs), Timeout: int64(f.r.IntN(3)) - 1})
	case 6:
		what = "RemoveContainer"
		_, err = f.d.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: f.pick(f.ctrs)})
	case 7:
		what = "StopPodSandbox"
		_, err = f.d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: f.pick(f.pods)})
	case 8:
		what = "RemovePodSandbox"
		_, err = f.d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: f.pick(f.pods)})
	case 9:
		what = "ExecSync"
		_, err = f.d.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: f.pick(f.ctrs),
			Cmd: f.command(), Timeout: int64(f.r.IntN(3))})
	case 10:
		what = "UpdateContainerResources"
		req := &runtimeapi.UpdateContainerResourcesRequest{ContainerId: f.pick(f.ctrs), Linux: &runtimeapi.LinuxContainerResources{
			CpuShares: f.r.Int64N(5000) - 10, MemoryLimitInBytes: f.r.Int64N(1<<30) - 1000, CpuQuota: f.r.Int64N(200000) - 10,
			CpuPeriod: f.r.Int64N(200000) - 10, CpusetCpus: f.pickStr("", "0", "0-1", "x", "99999")}}
		f.mutate(req)
		_, err = f.d.rt.UpdateContainerResources(ctx, req)
	case 11:
		what = "status and lists"
		switch f.r.IntN(5) {
		case 0:
			_, err = f.d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: f.pick(f.ctrs), Verbose: f.r.IntN(2) == 0})
		case 1:
			_, err = f.d.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: f.pick(f.pods), Verbose: f.r.IntN(2) == 0})
		case 2:
			_, err = f.d.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
				PodSandboxId: f.pick(f.pods), State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState(f.r.IntN(6))}}})
		case 3:
			_, err = f.d.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: f.pick(f.ctrs)})
		case 4:
			_, err = f.d.rt.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: f.pick(f.ctrs)})
		}
	case 12:
		what = "streaming URLs"
		switch f.r.IntN(3) {
		case 0:
			_, err = f.d.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: f.pick(f.ctrs), Cmd: f.command(), Stdout: f.r.IntN(2) == 0, Tty: f.r.IntN(2) == 0})
		case 1:
			_, err = f.d.rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: f.pick(f.ctrs), Stdin: f.r.IntN(2) == 0})
		case 2:
			_, err = f.d.rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: f.pick(f.pods), Port: []int32{int32(f.r.IntN(70000)) - 10}})
		}
	case 13:
		what = "images"
		// Only the local registry, or names that resolve nowhere: the
		// fuzzer sends no traffic off this machine.
		ref := f.pickStr(busybox, registry+"/no/such:image", "", "::", "a@sha256:00", registry+"/e2e-test-images/"+f.junk(8))
		switch f.r.IntN(3) {
		case 0:
			_, err = f.d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		case 1:
			_, err = f.d.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Verbose: true})
		case 2:
			if ref != busybox {
				_, err = f.d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			}
		}
	}
	c := status.Code(err)
	f.codes[c]++
	if !slices.Contains(allowed, c) {
		f.t.Errorf("request %d (%s): %v", i, what, err)
	}
}

// pick is one of ids, a prefix of one, a made-up ID or nothing.
func (f *fuzzer) pick(ids []string) string {
	switch x := f.r.IntN(10); {
	case x < 6 && len(ids) > 0:
		return ids[f.r.IntN(len(ids))]
	case x == 6 && len(ids) > 0:
		id := ids[f.r.IntN(len(ids))]
		return id[:1+f.r.IntN(len(id))]
	case x == 7:
		return ""
	case x == 8:
		return f.junk(64)
	default:
		return "../" + f.junk(4)
	}
}

func (f *fuzzer) pickStr(s ...string) string { return s[f.r.IntN(len(s))] }

func (f *fuzzer) junk(n int) string {
	const chars = "abcdef0123456789-_./;=\n\x00 ÿ"
	b := make([]rune, f.r.IntN(n+1))
	for i := range b {
		b[i] = []rune(chars)[f.r.IntN(len([]rune(chars)))]
	}
	return string(b)
}

func (f *fuzzer) command() []string {
	return [][]string{{"true"}, {"sh", "-c", "echo hi; exit 3"}, {"sleep", "2"}, {}, {"/no/such"}, {f.junk(10)},
		{"sh", "-c", "head -c 3000000 /dev/zero"}}[f.r.IntN(7)]
}

// podConfig is, half the time, a pod as kubelet sends one; otherwise one
// with random parts changed, then its bytes mutated at times.
func (f *fuzzer) podConfig(i int) *runtimeapi.PodSandboxConfig {
	name := fmt.Sprintf("fuzz-%d", i)
	if f.r.IntN(2) == 0 {
		cfg := podConfig(f.t, name)
		cfg.LogDirectory = filepath.Join(f.dir, "logs", name)
		return cfg
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "fuzz", Uid: "uid-" + name, Attempt: uint32(f.r.IntN(2))},
		Hostname:     f.pickStr(name, "", f.junk(70)),
		LogDirectory: f.pickStr(filepath.Join(f.dir, "logs", name), "", "relative/dir"),
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{f.pickStr("10.96.0.10", "::1", "x")}, Searches: []string{f.pickStr("svc.cluster.local", f.junk(5))}},
		PortMappings: []*runtimeapi.PortMapping{{ContainerPort: int32(f.r.IntN(70000)) - 2, HostPort: int32(f.r.IntN(3)) * int32(20000+f.r.IntN(1000)),
			Protocol: runtimeapi.Protocol(f.r.IntN(4)), HostIp: f.pickStr("", "127.0.0.1", "::1", "999.1.1.1")}},
		Labels: map[string]string{"app": f.junk(8)},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			Sysctls: map[string]string{f.pickStr("kernel.shm_rmid_forced", "net.ipv4.ping_group_range", "kernel.x", f.junk(6)): f.pickStr("1", "0 2147483647", f.junk(4))},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode(f.r.IntN(3)), Pid: runtimeapi.NamespaceMode(f.r.IntN(4)),
					Ipc: runtimeapi.NamespaceMode(f.r.IntN(3))},
				Privileged: f.r.IntN(8) == 0,
			},
		},
	}
	f.mutate(cfg)
	f.confinePod(cfg)
	return cfg
}

// containerConfig is, half the time, a busybox container as kubelet sends
// one; otherwise one with random parts changed, then its bytes mutated at
// times.
func (f *fuzzer) containerConfig(i int) *runtimeapi.ContainerConfig {
	cfg := containerConfig(fmt.Sprintf("c%d", i), f.command()...)
	if f.r.IntN(2) == 0 {
		return cfg
	}
	cfg.Metadata.Attempt = uint32(f.r.IntN(2))
	cfg.LogPath = f.pickStr("c.log", "", "../../escape.log", "/abs.log", f.junk(10))
	cfg.WorkingDir = f.pickStr("", "/tmp", "relative", "/no/such")
	cfg.Envs = []*runtimeapi.KeyValue{{Key: f.pickStr("A", "", "=", f.junk(5)), Value: []byte(f.junk(5))}}
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: f.pickStr("/data", "relative", "/proc/x", "/etc/hosts", ""),
		HostPath: f.junk(6), Readonly: f.r.IntN(2) == 0, Propagation: runtimeapi.MountPropagation(f.r.IntN(4))}}
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: f.r.Int64N(64 << 20), CpuShares: f.r.Int64N(2000), OomScoreAdj: f.r.Int64N(3000) - 1000}
	sc := cfg.Linux.SecurityContext
	sc.RunAsUser = &runtimeapi.Int64Value{Value: f.r.Int64N(70000) - 1}
	sc.RunAsUsername = f.pickStr("", "nobody", "no-such-user")
	sc.Privileged = f.r.IntN(8) == 0
	sc.ReadonlyRootfs = f.r.IntN(2) == 0
	sc.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{f.pickStr("NET_ADMIN", "CAP_NOPE", "ALL", "")}, DropCapabilities: []string{f.pickStr("ALL", "CHOWN", "")}}
	sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_ProfileType(f.r.IntN(4)), LocalhostRef: f.pickStr("", "/no/such.json", "rel")}
	sc.MaskedPaths = []string{f.pickStr("/proc/kcore", "relative", "")}
	sc.NamespaceOptions.Pid = runtimeapi.NamespaceMode(f.r.IntN(4))
	sc.NamespaceOptions.TargetId = f.pick(f.ctrs)
	cfg.StopSignal = runtimeapi.Signal(f.r.IntN(70))
	f.mutate(cfg)
	f.confineContainer(cfg)
	return cfg
}

// mutate flips, at times, a few bytes of m's wire form; a form that no
// longer parses is left as it was (the gRPC server would refuse it).
func (f *fuzzer) mutate(m proto.Message) {
	if f.r.IntN(3) != 0 {
		return
	}
	b, err := proto.Marshal(m)
	if err != nil || len(b) == 0 {
		return
	}
	for range 1 + f.r.IntN(4) {
		b[f.r.IntN(len(b))] = byte(f.r.IntN(256))
	}
	fresh := m.ProtoReflect().New().Interface()
	if proto.Unmarshal(b, fresh) == nil {
		proto.Reset(m)
		proto.Merge(m, fresh)
	}
}

// confinePod keeps what a fuzzed pod can do to the host inside the test:
// its cgroups under the test parent, its logs in the test directory, no
// sysctl of the host's own namespaces.
func (f *fuzzer) confinePod(cfg *runtimeapi.PodSandboxConfig) {
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxPodSandboxConfig{}
	}
	cfg.Linux.CgroupParent = cgroupParent
	if d := cfg.GetLogDirectory(); filepath.IsAbs(d) {
		cfg.LogDirectory = filepath.Join(f.dir, "logs", filepath.Base(d))
	}
	if ns := cfg.Linux.GetSecurityContext().GetNamespaceOptions(); ns == nil || ns.Network != runtimeapi.NamespaceMode_POD || ns.Ipc != runtimeapi.NamespaceMode_POD {
		cfg.Linux.Sysctls = nil
	}
	if ns := cfg.Linux.GetSecurityContext().GetNamespaceOptions(); ns != nil {
		ns.UsernsOptions = nil
	}
}

// confineContainer points a fuzzed container's host paths into the test
// directory: Spec creates a missing host directory, as kubelet expects.
func (f *fuzzer) confineContainer(cfg *runtimeapi.ContainerConfig) {
	for _, m := range cfg.Mounts {
		m.HostPath = filepath.Join(f.dir, "volumes", strings.ReplaceAll(filepath.Base("/"+m.GetHostPath()), "\x00", ""))
		m.Propagation = runtimeapi.MountPropagation_PROPAGATION_PRIVATE
	}
	cfg.Devices = nil
	cfg.CDIDevices = nil
	if ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(); ns != nil {
		ns.UsernsOptions = nil
	}
}

// checkExplained: every pod and container directory, netns pin and mount
// under ketchd's state belongs to a record ketchd lists.
func (f *fuzzer) checkExplained() {
	t, d := f.t, f.d
	known := map[string]bool{}
	for _, p := range d.pods(t, nil) {
		known[p.Id] = true
	}
	for _, c := range d.containers(t, nil) {
		known[c.Id] = true
	}
	for _, sub := range []string{"pods", "containers", "netns"} {
		ents, _ := os.ReadDir(filepath.Join(d.state, sub))
		for _, e := range ents {
			if !known[e.Name()] {
				t.Errorf("%s/%s/%s belongs to no listed pod or container", d.state, sub, e.Name())
			}
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 5 || !strings.HasPrefix(fs[4], d.state+"/") {
			continue
		}
		// <state>/<pods|containers|netns>/<id>/...; the netns directory
		// itself is a mount of its own.
		rel := strings.Split(strings.TrimPrefix(fs[4], d.state+"/"), "/")
		if len(rel) >= 2 && !known[rel[1]] {
			t.Errorf("mount %s belongs to no listed pod or container", fs[4])
		}
	}
}
