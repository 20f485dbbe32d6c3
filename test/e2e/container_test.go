//go:build e2e

package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	shimapi "ketch.dev/ketch/oci/shim/api"
)

// podWithLogs runs a pod as kubelet does by default (kubeletPod), whose
// containers log under a directory of the test's own, and returns its ID,
// config and log directory.
func (d *daemon) podWithLogs(t testing.TB, name string) (string, *runtimeapi.PodSandboxConfig, string) {
	t.Helper()
	cfg := kubeletPod(podConfig(t, name))
	cfg.LogDirectory = t.TempDir()
	return d.runPod(t, cfg), cfg, cfg.LogDirectory
}

// sharedPIDPod is podWithLogs for a pod whose containers share one PID
// namespace, as kubelet runs a pod with shareProcessNamespace: ketch-init
// is its PID 1.
func (d *daemon) sharedPIDPod(t testing.TB, name string) (string, *runtimeapi.PodSandboxConfig, string) {
	t.Helper()
	cfg := podConfig(t, name)
	cfg.LogDirectory = t.TempDir()
	return d.runPod(t, cfg), cfg, cfg.LogDirectory
}

// containerConfig is a busybox container as kubelet describes one by
// default: a PID namespace of its own (kubelet sends CONTAINER unless the
// pod shares its process namespace).
func containerConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: busybox},
		Command:  cmd,
		LogPath:  name + ".log",
		Labels:   map[string]string{"ctr": name},
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
}

func (d *daemon) createContainer(t testing.TB, pod string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	resp, err := d.rt.CreateContainer(ctxT(t, 30*time.Second), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", cfg.Metadata.Name, err)
	}
	return resp.ContainerId
}

func (d *daemon) startContainer(t testing.TB, id string) {
	t.Helper()
	if _, err := d.rt.StartContainer(ctxT(t, 30*time.Second), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
}

func (d *daemon) ctrStatus(t *testing.T, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := d.rt.ContainerStatus(ctxT(t, 10*time.Second), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStatus: %v", err)
	}
	return resp.Status
}

// waitExited waits for the container to be EXITED and returns its status.
func (d *daemon) waitExited(t *testing.T, id string, within time.Duration) *runtimeapi.ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := d.ctrStatus(t, id)
		if st.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container still %v after %v", st.State, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestContainerLifecycle: create, start, log, stop (TERM ignored by a shell
// as PID 1, so KILL after the timeout), remove; each state as kubelet reads
// it, and nothing left after.
func TestContainerLifecycle(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	pod, podCfg, logs := d.podWithLogs(t, "ctr-life")
	id := d.createContainer(t, pod, podCfg, containerConfig("main", "sh", "-c", "echo hello; echo oops >&2; exec sleep 300"))

	st := d.ctrStatus(t, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_CREATED || st.Metadata.Name != "main" || st.CreatedAt == 0 || st.StartedAt != 0 ||
		st.Image.Image != busybox || !strings.HasPrefix(st.ImageRef, "sha256:") && !strings.Contains(st.ImageRef, "@sha256:") ||
		st.LogPath != filepath.Join(logs, "main.log") || st.Labels["ctr"] != "main" {
		t.Errorf("created status = %v", st)
	}
	rootfs := filepath.Join(d.state, "containers", id, "rootfs")
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); !strings.Contains(string(mi), " "+rootfs+" ") {
		t.Error("the rootfs is not mounted after create")
	}
	d.startContainer(t, id)
	st = d.ctrStatus(t, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt == 0 {
		t.Errorf("started status = %v", st)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(readLog(t, st.LogPath), " stderr F oops\n") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if log := readLog(t, st.LogPath); !strings.Contains(log, " stdout F hello\n") || !strings.Contains(log, " stderr F oops\n") {
		t.Errorf("log = %q", log)
	}
	if got := d.containers(t, &runtimeapi.ContainerFilter{PodSandboxId: pod,
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}); len(got) != 1 || got[0].Id != id {
		t.Errorf("running containers of the pod = %v", got)
	}
	stats, err := d.rt.ContainerStats(ctxT(t, 10*time.Second), &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil || stats.Stats.GetMemory().GetWorkingSetBytes().GetValue() == 0 || stats.Stats.GetWritableLayer() == nil {
		t.Errorf("ContainerStats = %v, %v", stats, err)
	}

	start := time.Now()
	if _, err := d.rt.StopContainer(ctxT(t, 30*time.Second), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second || took > 10*time.Second {
		t.Errorf("stop with timeout 1 s of a program that ignores TERM took %v", took)
	}
	st = d.ctrStatus(t, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 || st.Reason != "Error" || st.FinishedAt < st.StartedAt {
		t.Errorf("stopped status = %v", st)
	}
	// An exited container keeps its writable layer, not its mount: a
	// node keeps thousands of them.
	waitFor(t, 5*time.Second, "the exited container's rootfs unmounted", func() bool {
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		return !strings.Contains(string(mi), filepath.Join(d.state, "containers", id))
	})
	if _, err := d.rt.StopContainer(ctxT(t, 10*time.Second), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Errorf("second stop: %v", err)
	}
	_, err = d.rt.ReopenContainerLog(ctxT(t, 10*time.Second), &runtimeapi.ReopenContainerLogRequest{ContainerId: id})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("reopen the log of a stopped container: %v, want FailedPrecondition", err)
	}
	for range 2 {
		if _, err := d.rt.RemoveContainer(ctxT(t, 30*time.Second), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.rt.ContainerStatus(ctxT(t, 10*time.Second), &runtimeapi.ContainerStatusRequest{ContainerId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("status of a removed container: %v, want NotFound", err)
	}
	d.checkContainerGone(t, id)
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

// TestContainerExits: exit codes and reasons as kubelet shows them.
func TestContainerExits(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	pod, podCfg, _ := d.sharedPIDPod(t, "ctr-exits")
	for _, tc := range []struct {
		desc   string
		cmd    []string
		limit  int64
		code   int32
		reason string
	}{
		{"success", []string{"true"}, 0, 0, "Completed"},
		{"failure", []string{"sh", "-c", "exit 3"}, 0, 3, "Error"},
		// In the pod's shared PID namespace, where the shell is not PID 1 and
		// so can be killed from inside.
		{"killed by a signal", []string{"sh", "-c", "kill -9 $$"}, 0, 137, "Error"},
		{"out of memory", []string{"tail", "/dev/zero"}, 16 << 20, 137, "OOMKilled"},
		// A process the shell left in the pod's PID namespace dies with
		// the container, as in containerd, not when it is removed.
		{"leaves a process behind", []string{"sh", "-c", "sleep 300 & exit 0"}, 0, 0, "Completed"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := containerConfig(strings.ReplaceAll(tc.desc, " ", "-"), tc.cmd...)
			if tc.desc == "killed by a signal" || tc.desc == "leaves a process behind" {
				cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
			}
			if tc.limit > 0 {
				cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: tc.limit}
			}
			id := d.createContainer(t, pod, podCfg, cfg)
			d.startContainer(t, id)
			st := d.waitExited(t, id, 30*time.Second)
			if st.ExitCode != tc.code || st.Reason != tc.reason {
				t.Errorf("exit %d %q, want %d %q", st.ExitCode, st.Reason, tc.code, tc.reason)
			}
			// Exited, not removed: its rootfs stays for the removal, but
			// no process, mount or cgroup of it.
			if pids := processesOf(id); len(pids) > 0 {
				t.Errorf("processes of exited container %s: %v", id, pids)
			}
			if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), id) {
				t.Errorf("a mount of exited container %s is left", id)
			}
			for _, mnt := range cgroupMounts() {
				if dirs, _ := filepath.Glob(filepath.Join(mnt, cgroupParent, id)); len(dirs) > 0 {
					t.Errorf("cgroup of exited container %s is left: %v", id, dirs)
				}
			}
		})
	}
	d.removePod(t, pod) // removes its containers too
	for _, c := range d.containers(t, nil) {
		t.Errorf("container %s outlived its pod", c.Id)
	}
	d.checkPodGone(t, pod)
}

// TestContainerBadInput: refused creates and starts answer clear codes
// and leave no record, snapshot, mount or cgroup behind.
func TestContainerBadInput(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	pod, podCfg, _ := d.podWithLogs(t, "ctr-bad")
	for _, tc := range []struct {
		desc   string
		pod    string
		mutate func(*runtimeapi.ContainerConfig)
		code   codes.Code
	}{
		{desc: "unknown pod", pod: "ffffffffffff", code: codes.NotFound},
		{desc: "no metadata", mutate: func(c *runtimeapi.ContainerConfig) { c.Metadata = nil }, code: codes.InvalidArgument},
		{desc: "no image", mutate: func(c *runtimeapi.ContainerConfig) { c.Image = nil }, code: codes.InvalidArgument},
		{desc: "image not pulled", mutate: func(c *runtimeapi.ContainerConfig) { c.Image.Image = registry + "/nope:1" }, code: codes.NotFound},
		{desc: "unknown user", mutate: func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.RunAsUsername = "nosuchuser"
		}, code: codes.NotFound},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := containerConfig("bad", "true")
			if tc.mutate != nil {
				tc.mutate(cfg)
			}
			p := pod
			if tc.pod != "" {
				p = tc.pod
			}
			_, err := d.rt.CreateContainer(ctxT(t, 30*time.Second), &runtimeapi.CreateContainerRequest{PodSandboxId: p, Config: cfg, SandboxConfig: podCfg})
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			if got := d.containers(t, nil); len(got) != 0 {
				t.Errorf("a refused container is listed: %v", got)
			}
			d.checkNoContainerLeft(t)
		})
	}
	// A program that is not in the image: the start fails and says so, and
	// the container is EXITED with StartError, as kubelet knows it.
	id := d.createContainer(t, pod, podCfg, containerConfig("missing", "/no/such/program"))
	_, err := d.rt.StartContainer(ctxT(t, 30*time.Second), &runtimeapi.StartContainerRequest{ContainerId: id})
	if err == nil || !strings.Contains(status.Convert(err).Message(), "/no/such/program") {
		t.Errorf("start of a missing program: %v, want an error naming it", err)
	}
	st := d.ctrStatus(t, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.Reason != "StartError" || st.ExitCode != 128 || !strings.Contains(st.Message, "/no/such/program") {
		t.Errorf("status after a failed start = %v", st)
	}
	// The same name again in the same pod and attempt is refused.
	cfg := containerConfig("missing", "true")
	_, err = d.rt.CreateContainer(ctxT(t, 30*time.Second), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("duplicate name: %v, want AlreadyExists", err)
	}
	if _, err := d.rt.RemoveContainer(ctxT(t, 30*time.Second), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	d.checkContainerGone(t, id)
	d.checkNoContainerLeft(t)
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}

func (d *daemon) containers(t testing.TB, f *runtimeapi.ContainerFilter) []*runtimeapi.Container {
	t.Helper()
	resp, err := d.rt.ListContainers(ctxT(t, 10*time.Second), &runtimeapi.ListContainersRequest{Filter: f})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Containers
}

// checkContainerGone: no mount, snapshot dir, cgroup, process or record of
// container id is left.
func (d *daemon) checkContainerGone(t *testing.T, id string) {
	t.Helper()
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), id) {
		t.Errorf("a mount of container %s is left", id)
	}
	if _, err := os.Stat(filepath.Join(d.state, "containers", id)); err == nil {
		t.Errorf("the rootfs directory of %s is left", id)
	}
	for _, mnt := range cgroupMounts() {
		if dirs, _ := filepath.Glob(filepath.Join(mnt, cgroupParent, id)); len(dirs) > 0 {
			t.Errorf("cgroup of container %s is left: %v", id, dirs)
		}
	}
	if pids := processesOf(id); len(pids) > 0 {
		t.Errorf("processes of container %s are left: %v", id, pids)
	}
}

// checkNoContainerLeft: no rootfs is mounted and no active snapshot exists
// beyond those of listed containers.
func (d *daemon) checkNoContainerLeft(t testing.TB) {
	t.Helper()
	listed := map[string]bool{}
	for _, c := range d.containers(t, nil) {
		listed[c.Id] = true
	}
	ents, _ := os.ReadDir(filepath.Join(d.state, "containers"))
	for _, e := range ents {
		if !listed[e.Name()] {
			t.Errorf("rootfs of unlisted container %s is left", e.Name())
		}
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Count(string(mi), d.state+"/containers/") > len(listed) {
		t.Errorf("more rootfs mounts than containers")
	}
}

// TestContainerEvents: GetContainerEvents sends each lifecycle event of a
// pod and its container once, in order, with the state it describes.
func TestContainerEvents(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	stream, err := d.rt.GetContainerEvents(ctxT(t, time.Minute), &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pod, podCfg, _ := d.podWithLogs(t, "events")
	id := d.createContainer(t, pod, podCfg, containerConfig("ev", "sh", "-c", "exit 7"))
	d.startContainer(t, id)
	d.waitExited(t, id, 10*time.Second)
	d.stopPod(t, pod)
	d.removePod(t, pod)

	type event struct {
		id   string
		kind runtimeapi.ContainerEventType
	}
	want := []event{
		{pod, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT},
		{pod, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT},
		{id, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT},
		{id, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT},
		{id, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT},
		{pod, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT},
		{id, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT},
		{pod, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT},
	}
	var got []event
	for range want {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, event{ev.ContainerId, ev.ContainerEventType})
		if ev.ContainerId == id && ev.ContainerEventType == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
			var st *runtimeapi.ContainerStatus
			for _, s := range ev.ContainersStatuses {
				if s.Id == id {
					st = s
				}
			}
			if st == nil || st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 7 {
				t.Errorf("the stopped event carries %v, want the exit recorded", st)
			}
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events = %v\nwant     %v", got, want)
		}
	}
}

// TestUpdateContainerResources: a running container's limits change in
// its cgroup and in its status.
func TestUpdateContainerResources(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	pod, podCfg, _ := d.podWithLogs(t, "update")
	cfg := containerConfig("up", "sleep", "300")
	// kubelet sends a hugepage limit for every page size the node has, also
	// where the hugetlb controller is not mounted: the container must start.
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuShares: 512,
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB"}, {PageSize: "1GB"}}}
	id := d.createContainer(t, pod, podCfg, cfg)
	d.startContainer(t, id)
	memLimit := func() string {
		for _, mnt := range cgroupMounts() {
			if b, err := os.ReadFile(filepath.Join(mnt, cgroupParent, id, "memory.limit_in_bytes")); err == nil {
				return strings.TrimSpace(string(b))
			}
			if b, err := os.ReadFile(filepath.Join(mnt, cgroupParent, id, "memory.max")); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
		return ""
	}
	if got := memLimit(); got != "67108864" {
		t.Fatalf("memory limit at start = %q", got)
	}
	want := &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20, CpuShares: 1024}
	if _, err := d.rt.UpdateContainerResources(ctxT(t, 10*time.Second), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: want}); err != nil {
		t.Fatal(err)
	}
	if got := memLimit(); got != "134217728" {
		t.Errorf("memory limit after update = %q", got)
	}
	if r := d.ctrStatus(t, id).GetResources().GetLinux(); r.GetMemoryLimitInBytes() != 128<<20 || r.GetCpuShares() != 1024 {
		t.Errorf("status resources = %v", r)
	}
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
	d.checkContainerGone(t, id)
}

// TestStartTheShimWentOnWith: ketchd that dies in StartContainer leaves a
// record that says created while the shim goes on and starts the program.
// The start asked again (by kubelet, or by ketchd's recovery) must find
// the container running with that process, not fail it as a StartError
// while it runs unseen. Here the test starts it through the shim itself.
func TestStartTheShimWentOnWith(t *testing.T) {
	d := startKetchd(t, daemonOpts{network: true})
	d.mustPull(t, busybox)
	pod, podCfg, _ := d.podWithLogs(t, "cut-short")
	id := d.createContainer(t, pod, podCfg, containerConfig("app", "sleep", "3600"))
	conn, err := net.Dial("unix", filepath.Join(d.state, "pods", pod, "shim", "shim.sock"))
	if err != nil {
		t.Fatal(err)
	}
	tc := ttrpc.NewClient(conn)
	defer tc.Close()
	ctx := ttrpc.WithMetadata(ctxT(t, 30*time.Second), ttrpc.MD{"ketch-pod": {pod}})
	started, err := shimapi.NewShimClient(tc).StartContainer(ctx, &shimapi.StartContainerRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	d.startContainer(t, id)
	if st := d.ctrStatus(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt != started.GetStartedAtUnixNano() {
		t.Errorf("status %v, want running since the shim's start at %d", st, started.GetStartedAtUnixNano())
	}
	d.stopPod(t, pod)
	d.removePod(t, pod)
	d.checkPodGone(t, pod)
}
