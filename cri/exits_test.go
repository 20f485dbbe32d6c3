package cri

import (
	"context"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"go.uber.org/mock/gomock"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/pidfd"
	"ketch.dev/ketch/sandbox"
)

// sleeper is a process of the test's own, for a pod's or container's PID.
func sleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// watchedDeps is a Server over mocks whose pods' and containers' PIDs are
// watched through real pidfds.
func watchedDeps(t *testing.T) *testDeps {
	t.Helper()
	d := newTestDeps(t, Config{})
	set, err := pidfd.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	d.srv.exits = set // before any RPC, while nothing else reads it
	return d
}

// TestExitsWatched: while a pod's PID 1 and its container run, nothing
// waits in their shim; the exit of either, or the end of the connection to
// the shim, starts the wait that records it.
func TestExitsWatched(t *testing.T) {
	for _, tc := range []struct {
		desc string
		end  func(d *testDeps, pod string, podProc, ctrProc *exec.Cmd)
		// What ends: the container, the pod, or (the shim's connection
		// lost) both, as their waits find.
		ctrEnds, podEnds bool
	}{
		{"the container exits", func(_ *testDeps, _ string, _, ctr *exec.Cmd) { _ = ctr.Process.Kill() }, true, false},
		{"the pod's PID 1 exits", func(_ *testDeps, _ string, pod, _ *exec.Cmd) { _ = pod.Process.Kill() }, false, true},
		{"the shim's connection ends", func(d *testDeps, pod string, _, _ *exec.Cmd) { d.srv.shimLost(pod) }, true, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			// Made first, so they are killed last, once the Server has
			// closed: their ends then are no news to it.
			podProc, ctrProc := sleeper(t), sleeper(t)
			d := watchedDeps(t)
			d.sandboxes.EXPECT().Run(gomock.Any(), gomock.Any()).Return(sandbox.Pod{
				PID: podProc.Process.Pid, NetNSPath: "/run/ketch/netns/x", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.5")},
			}, nil)
			resp, err := intercept(t, d.srv.RunPodSandbox, &runtimeapi.RunPodSandboxRequest{Config: testPodConfig("web")})
			if err != nil {
				t.Fatal(err)
			}
			pod, id := resp.PodSandboxId, "c0ffee"+resp.PodSandboxId[:10]
			if err := d.store.CreateContainer(store.Container{ID: id, SandboxID: pod, Name: "app", Key: pod + "/app_0",
				State: store.ContainerCreated, CreatedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			d.shimOf(pod).EXPECT().StartContainer(gomock.Any(), id).Return(shim.Started{Pid: ctrProc.Process.Pid, At: time.Now()}, nil)
			if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
			// Any wait now is one gomock was not told of: the test fails.
			time.Sleep(50 * time.Millisecond)
			if tc.ctrEnds {
				d.containers.EXPECT().WaitContainer(gomock.Any(), pod, id).Return(shim.Exit{Code: 137, At: time.Now()}, nil)
			}
			if tc.podEnds {
				d.sandboxes.EXPECT().Wait(gomock.Any(), podWithID(pod)).Return(nil)
			} else {
				// The pod's PID 1 still runs: its wait, had it begun, blocks.
				d.sandboxes.EXPECT().Wait(gomock.Any(), podWithID(pod)).DoAndReturn(func(ctx context.Context, _ sandbox.Spec) error {
					<-ctx.Done()
					return ctx.Err()
				}).MaxTimes(1)
			}
			tc.end(d, pod, podProc, ctrProc)
			waitFor(t, "the exits recorded", func() bool {
				c := containerStatusOf(t, d, id).State == runtimeapi.ContainerState_CONTAINER_EXITED
				sb, err := d.store.GetSandbox(pod)
				ready := err == nil && sb.State == store.SandboxReady
				return c == tc.ctrEnds && ready != tc.podEnds
			})
		})
	}
}
