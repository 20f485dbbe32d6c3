package cri

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"go.uber.org/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
	"ketch.dev/ketch/sandbox/cni"
)

func testPodConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "ns", Uid: "uid-" + name, Attempt: 1},
		Hostname: name,
		Labels:   map[string]string{"app": name},
		Linux:    &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/pod-" + name},
	}
}

// blockWait makes the pod's watcher wait until the server closes.
func blockWait(sb *MockSandboxes) {
	sb.EXPECT().Wait(gomock.Any(), gomock.Any()).DoAndReturn(func(ctx context.Context, _ sandbox.Spec) error {
		<-ctx.Done()
		return ctx.Err()
	}).AnyTimes()
}

// waitUntil makes every pod's PID 1 exit when died is closed.
func waitUntil(sb *MockSandboxes, died <-chan struct{}) {
	sb.EXPECT().Wait(gomock.Any(), gomock.Any()).DoAndReturn(func(ctx context.Context, _ sandbox.Spec) error {
		select {
		case <-died:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}).AnyTimes()
}

// runTestPod runs a pod through a Run that succeeds, and returns its ID.
func runTestPod(t *testing.T, d *testDeps, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	d.sandboxes.EXPECT().Run(gomock.Any(), gomock.Any()).Return(sandbox.Pod{
		PID: 42, NetNSPath: "/run/ketch/netns/x", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd00::5")},
	}, nil)
	resp, err := intercept(t, d.srv.RunPodSandbox, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return resp.PodSandboxId
}

func TestRunPodSandboxRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		mutate func(*runtimeapi.RunPodSandboxRequest)
	}{
		{"no config", func(r *runtimeapi.RunPodSandboxRequest) { r.Config = nil }},
		{"no metadata", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata = nil }},
		{"no name", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata.Name = "" }},
		{"no namespace", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata.Namespace = "" }},
		{"no uid", func(r *runtimeapi.RunPodSandboxRequest) { r.Config.Metadata.Uid = "" }},
		{"unknown handler", func(r *runtimeapi.RunPodSandboxRequest) { r.RuntimeHandler = "kata" }},
		{"pid TARGET", func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET}}
		}},
		{"network CONTAINER", func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_CONTAINER}}
		}},
		{"host port out of range", func(r *runtimeapi.RunPodSandboxRequest) {
			r.Config.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 70000}}
		}},
		{"userns: two mappings", userns(runtimeapi.NamespaceMode_POD, idMap(0, 1000, 100000), idMap(0, 2000, 100000))},
		{"userns: no mapping", userns(runtimeapi.NamespaceMode_POD)},
		{"userns: container ID 0 not mapped", userns(runtimeapi.NamespaceMode_POD, idMap(1, 1000, 100000))},
		{"userns: empty mapping", userns(runtimeapi.NamespaceMode_POD, idMap(0, 1000, 0))},
		{"userns: past the last ID", userns(runtimeapi.NamespaceMode_POD, idMap(0, 1<<32-65536, 65536))},
		{"userns: the node's root", userns(runtimeapi.NamespaceMode_POD, idMap(0, 0, 65536))},
		{"userns: a uid mapping only", func(r *runtimeapi.RunPodSandboxRequest) {
			userns(runtimeapi.NamespaceMode_POD, idMap(0, 1000, 65536))(r)
			r.Config.Linux.SecurityContext.NamespaceOptions.UsernsOptions.Gids = nil
		}},
		{"userns: CONTAINER", userns(runtimeapi.NamespaceMode_CONTAINER)},
		{"userns: TARGET", userns(runtimeapi.NamespaceMode_TARGET)},
		{"userns: NODE with mappings", userns(runtimeapi.NamespaceMode_NODE, idMap(0, 1000, 65536))},
		{"userns: POD with the node's PID namespace", func(r *runtimeapi.RunPodSandboxRequest) {
			userns(runtimeapi.NamespaceMode_POD, idMap(0, 1000, 65536))(r)
			r.Config.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_NODE
		}},
		{"userns: POD with the node's IPC namespace", func(r *runtimeapi.RunPodSandboxRequest) {
			userns(runtimeapi.NamespaceMode_POD, idMap(0, 1000, 65536))(r)
			r.Config.Linux.SecurityContext.NamespaceOptions.Ipc = runtimeapi.NamespaceMode_NODE
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{RuntimeHandlers: []string{"ketch"}, UserNamespaces: true}) // no EXPECT: Run must not be called
			req := &runtimeapi.RunPodSandboxRequest{Config: testPodConfig("bad")}
			tc.mutate(req)
			if _, err := intercept(t, d.srv.RunPodSandbox, req); status.Code(err) != codes.InvalidArgument {
				t.Errorf("got %v, want InvalidArgument", err)
			}
			if pods, _ := d.store.ListSandboxes(store.SandboxFilter{}); len(pods) != 0 {
				t.Errorf("a refused pod left records: %v", pods)
			}
		})
	}
}

func idMap(container, host, length uint32) *runtimeapi.IDMapping {
	return &runtimeapi.IDMapping{ContainerId: container, HostId: host, Length: length}
}

// userns gives the pod user namespace options in mode with the mappings
// as both its uid and its gid mappings.
func userns(mode runtimeapi.NamespaceMode, m ...*runtimeapi.IDMapping) func(*runtimeapi.RunPodSandboxRequest) {
	return func(r *runtimeapi.RunPodSandboxRequest) {
		r.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
			UsernsOptions: &runtimeapi.UserNamespace{Mode: mode, Uids: m, Gids: m}}}
	}
}

// A node whose config gives no user namespaces refuses pods that ask for
// one, and runs those that ask for the node's.
func TestRunPodSandboxUserNamespaceOff(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	req := &runtimeapi.RunPodSandboxRequest{Config: testPodConfig("own")}
	userns(runtimeapi.NamespaceMode_POD, idMap(0, 1000, 65536))(req)
	if _, err := intercept(t, d.srv.RunPodSandbox, req); status.Code(err) != codes.Unimplemented {
		t.Errorf("user namespace on a node without: %v, want Unimplemented", err)
	}
	req = &runtimeapi.RunPodSandboxRequest{Config: testPodConfig("node")}
	userns(runtimeapi.NamespaceMode_NODE)(req)
	runTestPod(t, d, req.Config)
}

func TestRunPodSandboxRecordsPod(t *testing.T) {
	d := newTestDeps(t, Config{RuntimeHandlers: []string{"ketch"}})
	blockWait(d.sandboxes)
	cfg := testPodConfig("web")
	d.sandboxes.EXPECT().Run(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, s sandbox.Spec) (sandbox.Pod, error) {
		// Recorded as creating before the pod exists, so a crash cannot
		// leave a pod without a record; not listed until it runs.
		rec, err := d.store.GetSandbox(s.ID)
		if err != nil || rec.State != store.SandboxCreating {
			t.Errorf("record during Run: %+v, %v; want creating", rec, err)
		}
		if l, _ := intercept(t, d.srv.ListPodSandbox, &runtimeapi.ListPodSandboxRequest{}); len(l.Items) != 0 {
			t.Errorf("a pod being created is listed: %v", l.Items)
		}
		return sandbox.Pod{PID: 42, IPs: []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd00::5")}}, nil
	})
	resp, err := intercept(t, d.srv.RunPodSandbox, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: "ketch"})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.PodSandboxId
	if len(id) != 64 {
		t.Errorf("ID %q is not 64 hex digits", id)
	}
	d.sandboxes.EXPECT().Ready(gomock.Any(), podWithID(id)).Return(true, nil)
	st, err := intercept(t, d.srv.PodSandboxStatus, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id[:10], Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	s := st.Status
	if s.Id != id || s.State != runtimeapi.PodSandboxState_SANDBOX_READY || s.Metadata.Name != "web" || s.Metadata.Attempt != 1 ||
		s.Labels["app"] != "web" || s.RuntimeHandler != "ketch" || s.Network.Ip != "10.1.0.5" ||
		len(s.Network.AdditionalIps) != 1 || s.Network.AdditionalIps[0].Ip != "fd00::5" || s.CreatedAt == 0 {
		t.Errorf("status = %v", s)
	}
	if st.Info["info"] == "" {
		t.Error("verbose status has no info")
	}
	// The name is held: the same metadata again is refused without a Run.
	if _, err := intercept(t, d.srv.RunPodSandbox, &runtimeapi.RunPodSandboxRequest{Config: cfg}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("second pod of the same name: %v, want AlreadyExists", err)
	}
}

func TestRunPodSandboxFailureFreesName(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	d.sandboxes.EXPECT().Run(gomock.Any(), gomock.Any()).Return(sandbox.Pod{}, fmt.Errorf("CNI ADD: %w", errdefs.ErrUnavailable))
	cfg := testPodConfig("web")
	if _, err := intercept(t, d.srv.RunPodSandbox, &runtimeapi.RunPodSandboxRequest{Config: cfg}); status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want the manager's Unavailable", err)
	}
	if pods, _ := d.store.ListSandboxes(store.SandboxFilter{}); len(pods) != 0 {
		t.Errorf("a failed pod left records: %v", pods)
	}
	runTestPod(t, d, cfg) // kubelet's retry of the same attempt
}

func TestPodSpecTranslation(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		mutate func(*runtimeapi.PodSandboxConfig)
		want   func(*sandbox.Spec)
	}{
		{"defaults", func(*runtimeapi.PodSandboxConfig) {}, func(*sandbox.Spec) {}},
		{"node namespaces", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE}}
		}, func(s *sandbox.Spec) { s.HostNetwork, s.HostPID, s.HostIPC, s.SharedPID = true, true, true, false }},
		{"per-container pid namespaces", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}
		}, func(s *sandbox.Spec) { s.SharedPID = false }},
		{"user namespace of its own", func(c *runtimeapi.PodSandboxConfig) {
			r := &runtimeapi.RunPodSandboxRequest{Config: c}
			userns(runtimeapi.NamespaceMode_POD, idMap(0, 100000, 65536))(r)
		}, func(s *sandbox.Spec) {
			m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
			s.UserNS = &sandbox.UserNS{UIDs: m, GIDs: m}
		}},
		{"the node's user namespace", func(c *runtimeapi.PodSandboxConfig) {
			userns(runtimeapi.NamespaceMode_NODE)(&runtimeapi.RunPodSandboxRequest{Config: c})
		}, func(*sandbox.Spec) {}},
		{"dns, ports, sysctls", func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"svc.local"}, Options: []string{"ndots:5"}}
			c.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53, HostPort: 5353, HostIp: "127.0.0.1"}}
			c.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"}
		}, func(s *sandbox.Spec) {
			s.DNS = &sandbox.DNS{Servers: []string{"10.0.0.10"}, Searches: []string{"svc.local"}, Options: []string{"ndots:5"}}
			s.PortMappings = []cni.PortMapping{{Protocol: "UDP", ContainerPort: 53, HostPort: 5353, HostIP: "127.0.0.1"}}
			s.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"}
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := testPodConfig("web")
			tc.mutate(cfg)
			// The CRI's default PID mode is POD: one namespace for the pod.
			want := sandbox.Spec{ID: "id1", Name: "web", Namespace: "ns", UID: "uid-web", Hostname: "web", CgroupParent: "/kubepods/pod-web", SharedPID: true}
			tc.want(&want)
			if got := podSpec("id1", cfg); !reflect.DeepEqual(got, want) {
				t.Errorf("podSpec =\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

func TestStopAndRemovePodSandbox(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	cfg := testPodConfig("web")
	id := runTestPod(t, d, cfg)
	wantSpec := podSpec(id, cfg)
	specIs := gomock.Cond(func(s sandbox.Spec) bool { return reflect.DeepEqual(s, wantSpec) })

	// A failed stop keeps the pod ready, and the caller learns why.
	d.sandboxes.EXPECT().Stop(gomock.Any(), specIs).Return(fmt.Errorf("CNI DEL: %w", context.DeadlineExceeded))
	if _, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("failed stop: %v, want DeadlineExceeded", err)
	}
	d.sandboxes.EXPECT().Stop(gomock.Any(), specIs).Return(nil).Times(2)
	for range 2 {
		if _, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatal(err)
		}
	}
	notReady := &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}
	if l, _ := intercept(t, d.srv.ListPodSandbox, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{State: notReady}}); len(l.Items) != 1 {
		t.Errorf("stopped pod not listed as NOTREADY: %v", l.Items)
	}
	// A failed remove keeps the record, so it can be retried.
	d.sandboxes.EXPECT().Remove(gomock.Any(), specIs).Return(errors.New("umount: busy"))
	if _, err := intercept(t, d.srv.RemovePodSandbox, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err == nil {
		t.Error("a failed remove succeeded")
	}
	if _, err := d.store.GetSandbox(id); err != nil {
		t.Errorf("record gone after a failed remove: %v", err)
	}
	d.sandboxes.EXPECT().Remove(gomock.Any(), specIs).Return(nil)
	for range 2 { // the second finds nothing and succeeds without a call
		if _, err := intercept(t, d.srv.RemovePodSandbox, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("stop of a removed pod: %v, want success", err)
	}
	if _, err := intercept(t, d.srv.PodSandboxStatus, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("status of a removed pod: %v, want NotFound", err)
	}
	for _, call := range []func() error{
		func() error {
			_, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{})
			return err
		},
		func() error {
			_, err := intercept(t, d.srv.RemovePodSandbox, &runtimeapi.RemovePodSandboxRequest{})
			return err
		},
		func() error {
			_, err := intercept(t, d.srv.PodSandboxStatus, &runtimeapi.PodSandboxStatusRequest{})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("empty pod ID: %v, want InvalidArgument", err)
		}
	}
}

// TestDeadPodIsNotReady: the watcher marks a pod whose PID 1 exited, and
// status checks the shim itself, so neither shows a dead pod as ready.
func TestDeadPodIsNotReady(t *testing.T) {
	d := newTestDeps(t, Config{})
	died := make(chan struct{})
	waitUntil(d.sandboxes, died)
	a := runTestPod(t, d, testPodConfig("a"))
	b := runTestPod(t, d, testPodConfig("b"))

	// b's PID 1 died a moment ago: status asks the shim.
	d.sandboxes.EXPECT().Ready(gomock.Any(), podWithID(b)).Return(false, nil)
	st, err := intercept(t, d.srv.PodSandboxStatus, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: b})
	if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("status = %v, %v; want NOTREADY", st, err)
	}
	// a's dies: its watcher marks it.
	close(died)
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec, _ := d.store.GetSandbox(a)
		if rec.State == store.SandboxNotReady {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not mark the dead pod")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ready := &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}
	if l, _ := intercept(t, d.srv.ListPodSandbox, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{State: ready}}); len(l.Items) != 0 {
		t.Errorf("dead pods listed as ready: %v", l.Items)
	}
}

func TestPodSandboxStats(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	id := runTestPod(t, d, testPodConfig("web"))
	for _, c := range []store.Container{
		{ID: "c1", SandboxID: id, Name: "app", Key: id + "/app_0", State: store.ContainerRunning},
		{ID: "c2", SandboxID: id, Name: "done", Key: id + "/done_0", State: store.ContainerExited},
	} {
		if err := d.store.CreateContainer(c); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Now()
	d.sandboxes.EXPECT().Stats(gomock.Any(), gomock.Any()).Return(sandbox.Stats{
		Stats:      shim.Stats{At: at, Cgroup: testCgroup()},
		Interfaces: []sandbox.Interface{{Name: "eth0", RxBytes: 10, TxBytes: 20}},
	}, nil).Do(func(_ context.Context, s sandbox.Spec) {
		if s.ID != id {
			t.Errorf("stats of %s, want %s", s.ID, id)
		}
	}).Times(2)
	d.shimOf(id).EXPECT().Stats(gomock.Any(), "c1", shim.StatsOptions{}).Return(shim.Stats{At: at, Cgroup: testCgroup()}, nil).Times(2)
	d.images.EXPECT().WritableUsage(gomock.Any(), "c1").Return(uint64(4096), uint64(3), nil).Times(2)
	resp, err := intercept(t, d.srv.PodSandboxStats, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: id})
	if err != nil {
		t.Fatal(err)
	}
	if n := resp.Stats.Linux.Network; n.DefaultInterface.Name != "eth0" || n.DefaultInterface.RxBytes.Value != 10 || resp.Stats.Attributes.Id != id {
		t.Errorf("stats = %v", resp.Stats)
	}
	// kubelet's PodAndContainerStatsFromCRI finds the running containers
	// in the pod's stats, and the pod's memory left under its limit.
	l := resp.Stats.Linux
	if len(l.Containers) != 1 || l.Containers[0].Attributes.Id != "c1" || l.Containers[0].WritableLayer.UsedBytes.Value != 4096 {
		t.Errorf("the pod's container stats = %v, want c1's alone", l.Containers)
	}
	if m := l.Memory; m.WorkingSetBytes.Value != 4096 || m.AvailableBytes.GetValue() != 80<<20-4096 {
		t.Errorf("pod memory = %v, want 4096 working set and the rest of 80 MiB available", m)
	}
	if c := l.Containers[0]; c.Swap == nil || c.Swap.SwapUsageBytes.Value != 0 || c.Io == nil || c.Io.Psi != nil {
		t.Errorf("container swap %v and IO %v: want none swapped and no pressure on cgroup v1", c.Swap, c.Io)
	}
	list, err := intercept(t, d.srv.ListPodSandboxStats, &runtimeapi.ListPodSandboxStatsRequest{})
	if err != nil || len(list.Stats) != 1 {
		t.Errorf("list stats = %v, %v", list, err)
	}
	if _, err := intercept(t, d.srv.PodSandboxStats, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: "ffff"}); status.Code(err) != codes.NotFound {
		t.Errorf("stats of an unknown pod: %v, want NotFound", err)
	}
}

func TestResultMessage(t *testing.T) {
	long := strings.Repeat("é", 3000) // 6000 bytes of two-byte runes
	for _, tc := range []struct {
		desc, in, want string
	}{
		{"one newline trimmed", "42\n", "42"},
		{"only one", "42\n\n", "42\n"},
		{"none to trim", "42", "42"},
		{"empty", "", ""},
		{"invalid UTF-8 replaced", "a\xffb", "a\uFFFDb"},
		{"cut at 4 KiB on a rune boundary", long, long[:4096]},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := resultMessage([]byte(tc.in)); got != tc.want {
				t.Errorf("resultMessage(%.20q) = %.20q (%d bytes), want %.20q (%d bytes)", tc.in, got, len(got), tc.want, len(tc.want))
			}
		})
	}
}
