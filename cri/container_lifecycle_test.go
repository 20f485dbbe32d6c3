package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"syscall"
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
)

// createdContainer records a created container "app" in a running pod.
func createdContainer(t *testing.T, d *testDeps) (pod, id string) {
	t.Helper()
	blockWait(d.sandboxes)
	pod = runTestPod(t, d, testPodConfig("web"))
	id = "c0ffee" + pod[:10]
	if err := d.store.CreateContainer(store.Container{ID: id, SandboxID: pod, Name: "app", Key: pod + "/app_0",
		State: store.ContainerCreated, CreatedAt: time.Now(), StopSignal: "SIGQUIT"}); err != nil {
		t.Fatal(err)
	}
	return pod, id
}

func containerStatusOf(t *testing.T, d *testDeps, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := intercept(t, d.srv.ContainerStatus, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status
}

// TestContainerExits: a started container's exit, as its shim reports it
// (or loses it), is what ContainerStatus and the exit counters show.
func TestContainerExits(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		exit    shim.Exit
		waitErr error
		code    int32
		reason  string
	}{
		{desc: "success", exit: shim.Exit{Code: 0}, reason: "Completed"},
		{desc: "failure", exit: shim.Exit{Code: 3}, code: 3, reason: "Error"},
		{desc: "out of memory", exit: shim.Exit{Code: 137, OOMKilled: true}, code: 137, reason: "OOMKilled"},
		{desc: "the shim died", waitErr: sandbox.ErrShimGone, code: 255, reason: "ShimDied"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{})
			pod, id := createdContainer(t, d)
			exited := make(chan struct{})
			d.shimOf(pod).EXPECT().StartContainer(gomock.Any(), id).Return(shim.Started{Pid: 99, At: time.Now()}, nil)
			d.containers.EXPECT().WaitContainer(gomock.Any(), pod, id).DoAndReturn(func(context.Context, string, string) (shim.Exit, error) {
				<-exited
				e := tc.exit
				e.At = time.Now()
				return e, tc.waitErr
			})
			if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
			if st := containerStatusOf(t, d, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt == 0 {
				t.Fatalf("after start: %v", st)
			}
			// Started once: a second start is refused.
			if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: id}); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("second start: %v, want FailedPrecondition", err)
			}
			close(exited)
			var st *runtimeapi.ContainerStatus
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if st = containerStatusOf(t, d, id); st.State == runtimeapi.ContainerState_CONTAINER_EXITED {
					break
				}
			}
			if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != tc.code || st.Reason != tc.reason {
				t.Errorf("exit %v %d %q, want EXITED %d %q", st.State, st.ExitCode, st.Reason, tc.code, tc.reason)
			}
		})
	}
}

func TestStartContainerFails(t *testing.T) {
	for _, tc := range []struct {
		desc string
		// what the shim's state says after the failed call
		state    shim.State
		stateErr error
		want     runtimeapi.ContainerState
		reason   string
	}{
		{desc: "the program cannot start", state: shim.State{Status: shim.StatusStopped},
			want: runtimeapi.ContainerState_CONTAINER_EXITED, reason: "StartError"},
		// The call was cut short (its client went away), the start not.
		{desc: "started all the same", state: shim.State{Status: shim.StatusRunning, Pid: 99, StartedAt: time.Now()},
			want: runtimeapi.ContainerState_CONTAINER_RUNNING},
		// Whatever the start began is ended with the shim's leftovers.
		{desc: "the shim died under it", stateErr: fmt.Errorf("shim: %w", errdefs.ErrUnavailable),
			want: runtimeapi.ContainerState_CONTAINER_EXITED, reason: "ShimDied"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{})
			pod, id := createdContainer(t, d)
			d.shimOf(pod).EXPECT().StartContainer(gomock.Any(), id).Return(shim.Started{}, errors.New("exec: \"nope\": executable file not found in $PATH"))
			d.shimOf(pod).EXPECT().State(gomock.Any(), id).Return(tc.state, tc.stateErr)
			switch tc.reason {
			case "":
				d.containers.EXPECT().WaitContainer(gomock.Any(), pod, id).DoAndReturn(func(ctx context.Context, _, _ string) (shim.Exit, error) {
					<-ctx.Done() // watched until the server closes
					return shim.Exit{}, ctx.Err()
				})
			case "ShimDied":
				d.containers.EXPECT().DeleteContainer(gomock.Any(), pod, id).Return(nil)
			}
			if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: id}); err == nil {
				t.Fatal("a start that failed succeeded")
			}
			st := containerStatusOf(t, d, id)
			if st.State != tc.want || st.Reason != tc.reason || (tc.reason == "StartError" && st.ExitCode != 128) {
				t.Errorf("after a failed start: %v %d %q, want %v %q", st.State, st.ExitCode, st.Reason, tc.want, tc.reason)
			}
		})
	}
	d := newTestDeps(t, Config{})
	for _, req := range []*runtimeapi.StartContainerRequest{{}, {ContainerId: "ffff"}} {
		if _, err := intercept(t, d.srv.StartContainer, req); status.Code(err) != map[string]codes.Code{"": codes.InvalidArgument, "ffff": codes.NotFound}[req.ContainerId] {
			t.Errorf("start %q: %v", req.ContainerId, err)
		}
	}
}

// TestStopAndRemoveContainer: stop sends the image's stop signal, then
// KILL once the grace runs out; remove kills, deletes and releases; both
// succeed again, and for unknown containers.
func TestStopAndRemoveContainer(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		timeout int64
		exits   bool // on the stop signal
	}{
		{desc: "exits on its stop signal", timeout: 5, exits: true},
		{desc: "ignores it and is KILLed", timeout: 1},
		{desc: "timeout 0: KILLed at once"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{})
			pod, id := createdContainer(t, d)
			killed := make(chan struct{})
			d.shimOf(pod).EXPECT().StartContainer(gomock.Any(), id).Return(shim.Started{Pid: 99, At: time.Now()}, nil)
			wait := func(ctx context.Context, _, _ string) (shim.Exit, error) {
				select {
				case <-killed:
					return shim.Exit{Code: 137, Signal: syscall.SIGKILL, At: time.Now()}, nil
				case <-ctx.Done():
					return shim.Exit{}, ctx.Err()
				}
			}
			d.containers.EXPECT().WaitContainer(gomock.Any(), pod, id).DoAndReturn(wait).AnyTimes()
			if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
			if tc.timeout > 0 {
				d.containers.EXPECT().SignalContainer(gomock.Any(), pod, id, syscall.SIGQUIT, false).DoAndReturn(
					func(context.Context, string, string, syscall.Signal, bool) error {
						if tc.exits {
							close(killed)
						}
						return nil
					})
			}
			if !tc.exits {
				d.containers.EXPECT().SignalContainer(gomock.Any(), pod, id, syscall.SIGKILL, true).DoAndReturn(
					func(context.Context, string, string, syscall.Signal, bool) error { close(killed); return nil })
			}
			start := time.Now()
			if _, err := intercept(t, d.srv.StopContainer, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: tc.timeout}); err != nil {
				t.Fatal(err)
			}
			if el := time.Since(start); tc.exits && el > 2*time.Second {
				t.Errorf("stop took %v though the container exited on its signal", el)
			}
			if st := containerStatusOf(t, d, id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 {
				t.Errorf("after stop: %v %d", st.State, st.ExitCode)
			}
			// Again, and an unknown one: nothing to do, no error.
			for _, cid := range []string{id, "ffff"} {
				if _, err := intercept(t, d.srv.StopContainer, &runtimeapi.StopContainerRequest{ContainerId: cid}); err != nil {
					t.Errorf("stop %s again: %v", cid, err)
				}
			}

			d.containers.EXPECT().DeleteContainer(gomock.Any(), pod, id).Return(nil)
			d.images.EXPECT().Release(gomock.Any(), id, gomock.Any()).Return(nil)
			d.containers.EXPECT().ContainerRootfs(id).Return("/x/" + id + "/rootfs").AnyTimes()
			d.containers.EXPECT().RemoveContainerDir(id).Return(nil)
			for _, cid := range []string{id, id, "ffff"} {
				if _, err := intercept(t, d.srv.RemoveContainer, &runtimeapi.RemoveContainerRequest{ContainerId: cid}); err != nil {
					t.Errorf("remove %s: %v", cid, err)
				}
			}
			if _, err := intercept(t, d.srv.ContainerStatus, &runtimeapi.ContainerStatusRequest{ContainerId: id}); status.Code(err) != codes.NotFound {
				t.Errorf("status after remove: %v, want NotFound", err)
			}
		})
	}
}

// TestRemoveExitedReleaseFails: an exited container's record goes beside
// its rootfs, not after it, so a rootfs that cannot be released is left to
// the next start's collection (TestCollectLeftovers), and the call says why.
func TestRemoveExitedReleaseFails(t *testing.T) {
	d := newTestDeps(t, Config{})
	pod, id := createdContainer(t, d)
	if _, err := d.store.UpdateContainer(id, func(c *store.Container) error { c.State = store.ContainerExited; return nil }); err != nil {
		t.Fatal(err)
	}
	d.containers.EXPECT().DeleteContainer(gomock.Any(), pod, id).Return(nil)
	d.containers.EXPECT().ContainerRootfs(id).Return("/x/" + id + "/rootfs").AnyTimes()
	d.images.EXPECT().Release(gomock.Any(), id, gomock.Any()).Return(errors.New("device or resource busy"))
	if _, err := intercept(t, d.srv.RemoveContainer, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("remove with a rootfs that cannot be released: %v, want its error", err)
	}
	if _, err := d.store.GetContainer(id); !errdefs.IsNotFound(err) {
		t.Errorf("the record after the remove: %v, want it gone", err)
	}
}

// TestExecSync: the shim's result comes back as is; a container that is
// not running refuses, as containerd does.
func TestExecSync(t *testing.T) {
	d := newTestDeps(t, Config{})
	pod, id := createdContainer(t, d)
	if _, err := intercept(t, d.srv.ExecSync, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("exec in a created container: %v, want FailedPrecondition", err)
	}
	if _, err := d.store.UpdateContainer(id, func(c *store.Container) error { c.State = store.ContainerRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	d.shimOf(pod).EXPECT().ExecSync(gomock.Any(), id, []string{"sh", "-c", "echo hi; exit 2"}, 3*time.Second).
		Return(shim.ExecResult{Stdout: []byte("hi\n"), ExitCode: 2}, nil)
	resp, err := intercept(t, d.srv.ExecSync, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "echo hi; exit 2"}, Timeout: 3})
	if err != nil || string(resp.Stdout) != "hi\n" || resp.ExitCode != 2 {
		t.Errorf("ExecSync = %v, %v", resp, err)
	}
	d.shimOf(pod).EXPECT().ExecSync(gomock.Any(), id, gomock.Any(), gomock.Any()).Return(shim.ExecResult{TimedOut: true}, nil)
	if _, err := intercept(t, d.srv.ExecSync, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sleep", "9"}, Timeout: 1}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a timed-out exec: %v, want DeadlineExceeded", err)
	}
	if _, err := intercept(t, d.srv.ExecSync, &runtimeapi.ExecSyncRequest{ContainerId: id}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("exec without a command: %v, want InvalidArgument", err)
	}
}

// TestRunningContainerRPCs: the RPCs that need a running container refuse
// a created one with FailedPrecondition (stats: NotFound, as containerd),
// and reach the shim for a running one.
func TestRunningContainerRPCs(t *testing.T) {
	d := newTestDeps(t, Config{ImageRoot: "/var/lib/ketch/image"})
	pod, id := createdContainer(t, d)
	resources := &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, MemoryLimitInBytes: 64 << 20}
	calls := []struct {
		rpc     string
		call    func() error
		created codes.Code
		expect  func()
	}{
		{rpc: "ReopenContainerLog", created: codes.FailedPrecondition,
			call: func() error {
				_, err := intercept(t, d.srv.ReopenContainerLog, &runtimeapi.ReopenContainerLogRequest{ContainerId: id})
				return err
			},
			expect: func() { d.shimOf(pod).EXPECT().ReopenLog(gomock.Any(), id).Return(nil) }},
		{rpc: "UpdateContainerResources", created: codes.FailedPrecondition,
			call: func() error {
				_, err := intercept(t, d.srv.UpdateContainerResources, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: resources})
				return err
			},
			expect: func() {
				d.shimOf(pod).EXPECT().Update(gomock.Any(), id, gomock.Any()).DoAndReturn(
					func(_ context.Context, _ string, r *specs.LinuxResources) error {
						if r.CPU == nil || *r.CPU.Quota != 50000 || r.Memory == nil || *r.Memory.Limit != 64<<20 {
							t.Errorf("resources to the shim: %+v", r)
						}
						return nil
					})
			}},
		{rpc: "ContainerStats", created: codes.NotFound,
			call: func() error {
				resp, err := intercept(t, d.srv.ContainerStats, &runtimeapi.ContainerStatsRequest{ContainerId: id})
				if err == nil && resp.Stats.WritableLayer.UsedBytes.Value != 4096 {
					t.Errorf("stats = %v", resp.Stats)
				}
				return err
			},
			expect: func() {
				d.shimOf(pod).EXPECT().Stats(gomock.Any(), id, shim.StatsOptions{}).Return(shim.Stats{At: time.Now(), Cgroup: testCgroup()}, nil)
				d.images.EXPECT().WritableUsage(gomock.Any(), id).Return(uint64(4096), uint64(2), nil)
			}},
	}
	for _, c := range calls {
		if err := c.call(); status.Code(err) != c.created {
			t.Errorf("%s of a created container: %v, want %v", c.rpc, err, c.created)
		}
	}
	if l, err := intercept(t, d.srv.ListContainerStats, &runtimeapi.ListContainerStatsRequest{}); err != nil || len(l.Stats) != 0 {
		t.Errorf("stats listed for a created container: %v, %v", l, err)
	}
	if _, err := d.store.UpdateContainer(id, func(c *store.Container) error { c.State, c.PID = store.ContainerRunning, 99; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, c := range calls {
		c.expect()
		if err := c.call(); err != nil {
			t.Errorf("%s of a running container: %v", c.rpc, err)
		}
	}
	// The resize is in the record: status reports what applies now.
	resp, err := intercept(t, d.srv.ContainerStatus, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Status.GetResources().GetLinux(); r.GetCpuQuota() != 50000 || r.GetMemoryLimitInBytes() != 64<<20 {
		t.Errorf("status resources after the resize: %v", r)
	}
	var info struct {
		SandboxID string `json:"sandboxID"`
		PID       int    `json:"pid"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.SandboxID != pod || info.PID != 99 {
		t.Errorf("verbose info %s: %+v, %v", resp.Info["info"], info, err)
	}
	if _, err := intercept(t, d.srv.UpdateContainerResources, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("an update without resources: %v, want InvalidArgument", err)
	}
}
