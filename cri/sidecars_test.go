package cri

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"go.uber.org/mock/gomock"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/oci/shim"
)

// sidecarPod runs a pod with annotations, a created container named
// exiting, started through StartContainer with a watcher that returns exit
// once closed, and a running record of each container in running. It
// returns the pod's ID and the container IDs by name.
func sidecarPod(t *testing.T, d *testDeps, annotations map[string]string, exiting string, exit <-chan struct{}, running ...string) (string, map[string]string) {
	t.Helper()
	blockWait(d.sandboxes)
	cfg := testPodConfig("wf")
	cfg.Annotations = annotations
	pod := runTestPod(t, d, cfg)
	ids := map[string]string{}
	for _, name := range append([]string{exiting}, running...) {
		ids[name] = testID(pod + name)
		c := store.Container{ID: ids[name], SandboxID: pod, Name: name, Key: pod + "/" + name + "_0", State: store.ContainerCreated, CreatedAt: time.Now()}
		if name != exiting {
			c.State, c.PID, c.StartedAt = store.ContainerRunning, 100, time.Now()
		}
		if name == "proxy" {
			c.StopSignal = "SIGINT" // its image's
		}
		if err := d.store.CreateContainer(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.store.CreateContainer(store.Container{ID: testID(pod + "done"), SandboxID: pod, Name: "done", Key: pod + "/done_0",
		State: store.ContainerExited, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	id := ids[exiting]
	d.shimOf(pod).EXPECT().StartContainer(gomock.Any(), id).Return(shim.Started{Pid: 99, At: time.Now()}, nil)
	d.containers.EXPECT().WaitContainer(gomock.Any(), pod, id).DoAndReturn(func(ctx context.Context, _, _ string) (shim.Exit, error) {
		select {
		case <-exit:
			return shim.Exit{Code: 0, At: time.Now()}, nil
		case <-ctx.Done():
			return shim.Exit{}, ctx.Err()
		}
	})
	if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	return pod, ids
}

// sidecar is how a running container answers its stop signal.
type sidecar int

const (
	exitsOnSignal sidecar = iota // exits on its stop signal
	ignoresSignal                // only KILL ends it
	untouched                    // must not be signalled at all
)

// expectSidecar sets what stopping container id of pod takes: its stop
// signal sig, then, if it ignores that for the grace, KILL to all its
// processes.
func expectSidecar(d *testDeps, pod, id string, sig syscall.Signal, how sidecar) {
	if how == untouched {
		return // gomock fails any call about it
	}
	killed := make(chan struct{})
	first := d.containers.EXPECT().SignalContainer(gomock.Any(), pod, id, sig, false).DoAndReturn(
		func(context.Context, string, string, syscall.Signal, bool) error {
			if how == exitsOnSignal {
				close(killed)
			}
			return nil
		})
	d.containers.EXPECT().WaitContainer(gomock.Any(), pod, id).DoAndReturn(func(ctx context.Context, _, _ string) (shim.Exit, error) {
		select {
		case <-killed:
			code := 0
			if how == ignoresSignal {
				code = 137
			}
			return shim.Exit{Code: code, At: time.Now()}, nil
		case <-ctx.Done():
			return shim.Exit{}, ctx.Err()
		}
	}).MinTimes(1).MaxTimes(2) // once more after KILL
	if how == ignoresSignal {
		d.containers.EXPECT().SignalContainer(gomock.Any(), pod, id, syscall.SIGKILL, true).DoAndReturn(
			func(context.Context, string, string, syscall.Signal, bool) error { close(killed); return nil }).After(first)
	}
}

// TestSidecarsStopWithMain: when the container ketch.dev/main names exits,
// the pod's other running containers (or those ketch.dev/sidecars lists)
// get their stop signal, and KILL after the sidecar grace if they ignore
// it; the exits of other containers, or of pods without the annotation,
// stop nothing.
func TestSidecarsStopWithMain(t *testing.T) {
	for _, tc := range []struct {
		desc        string
		annotations map[string]string
		exiting     string
		wait, proxy sidecar // the running containers "wait" and "proxy"
	}{
		{desc: "all others, on their stop signal", annotations: map[string]string{oci.AnnotationMain: "main"}, exiting: "main"},
		{desc: "one ignores it and is KILLed", annotations: map[string]string{oci.AnnotationMain: "main"}, exiting: "main", proxy: ignoresSignal},
		{desc: "only those listed", annotations: map[string]string{oci.AnnotationMain: "main", oci.AnnotationSidecars: "istio, proxy"},
			exiting: "main", wait: untouched},
		{desc: "another container exits", annotations: map[string]string{oci.AnnotationMain: "main"}, exiting: "init",
			wait: untouched, proxy: untouched},
		{desc: "no main container", annotations: map[string]string{oci.AnnotationSidecars: "proxy"}, exiting: "main",
			wait: untouched, proxy: untouched},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{Workflow: WorkflowConfig{SidecarGrace: 100 * time.Millisecond}})
			exit := make(chan struct{})
			pod, ids := sidecarPod(t, d, tc.annotations, tc.exiting, exit, "wait", "proxy")
			expectSidecar(d, pod, ids["wait"], syscall.SIGTERM, tc.wait)
			expectSidecar(d, pod, ids["proxy"], syscall.SIGINT, tc.proxy)
			close(exit)
			waitFor(t, tc.exiting+"'s exit to be recorded", func() bool {
				return containerStatusOf(t, d, ids[tc.exiting]).State == runtimeapi.ContainerState_CONTAINER_EXITED
			})
			for name, how := range map[string]sidecar{"wait": tc.wait, "proxy": tc.proxy} {
				if how == untouched {
					continue
				}
				waitFor(t, name+" to be stopped", func() bool {
					return containerStatusOf(t, d, ids[name]).State == runtimeapi.ContainerState_CONTAINER_EXITED
				})
				if s := containerStatusOf(t, d, ids[name]); how == ignoresSignal && s.ExitCode != 137 {
					t.Errorf("%s exit code %d, want 137: KILLed", name, s.ExitCode)
				}
			}
			// The stops run beside the watcher; Close waits for them, so
			// a call gomock did not expect has failed the test by now.
			d.srv.Close()
			for name, how := range map[string]sidecar{"wait": tc.wait, "proxy": tc.proxy} {
				if s := containerStatusOf(t, d, ids[name]); how == untouched && s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
					t.Errorf("%s, not a sidecar of this exit, is %v", name, s.State)
				}
			}
		})
	}
}

// TestSidecarStopFails: a sidecar whose stop fails is left running, and
// the others are stopped all the same.
func TestSidecarStopFails(t *testing.T) {
	d := newTestDeps(t, Config{Workflow: WorkflowConfig{SidecarGrace: time.Second}})
	exit := make(chan struct{})
	pod, ids := sidecarPod(t, d, map[string]string{oci.AnnotationMain: "main"}, "main", exit, "wait", "proxy")
	d.containers.EXPECT().SignalContainer(gomock.Any(), pod, ids["wait"], syscall.SIGTERM, false).Return(errors.New("shim: broken pipe"))
	expectSidecar(d, pod, ids["proxy"], syscall.SIGINT, exitsOnSignal)
	close(exit)
	waitFor(t, "proxy to be stopped", func() bool {
		return containerStatusOf(t, d, ids["proxy"]).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	d.srv.Close()
	if s := containerStatusOf(t, d, ids["wait"]); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("a sidecar whose stop failed is %v", s.State)
	}
}

// TestSidecarsStopAfterRestart: a main container that exited while ketchd
// was down stops its sidecars once the next ketchd finds the exit.
func TestSidecarsStopAfterRestart(t *testing.T) {
	st := openStore(t)
	pod := storePod(t, st, "wf")
	if _, err := st.UpdateSandbox(pod, func(sb *store.Sandbox) error {
		sb.Annotations = map[string]string{oci.AnnotationMain: "main"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	main := storeContainer(t, st, pod, "main", store.ContainerRunning, false)
	proxy := storeContainer(t, st, pod, "proxy", store.ContainerRunning, false)
	d := restart(t, Config{Workflow: WorkflowConfig{SidecarGrace: time.Second}}, st, func(d *testDeps) {
		expectAdopted(d, pod, "wf")
		expectNothingLeft(d)
		d.containers.EXPECT().WaitContainer(gomock.Any(), pod, main).Return(shim.Exit{Code: 0, At: time.Now()}, nil)
		expectSidecar(d, pod, proxy, syscall.SIGTERM, exitsOnSignal) // its watcher's wait, and the stop's
	})
	waitFor(t, "the sidecar to be stopped", func() bool {
		return containerStatusOf(t, d, proxy).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if s := containerStatusOf(t, d, main); s.State != runtimeapi.ContainerState_CONTAINER_EXITED || s.Reason != reasonCompleted {
		t.Errorf("main: %v %q, want EXITED Completed", s.State, s.Reason)
	}
}

// TestSidecarsStopWhenMainCannotStart: a main container whose program
// cannot start has exited as far as kubelet knows (EXITED, 128,
// StartError), and will not run again under restartPolicy Never: its
// sidecars must not keep the pod running.
func TestSidecarsStopWhenMainCannotStart(t *testing.T) {
	d := newTestDeps(t, Config{Workflow: WorkflowConfig{SidecarGrace: time.Second}})
	blockWait(d.sandboxes)
	cfg := testPodConfig("wf")
	cfg.Annotations = map[string]string{oci.AnnotationMain: "main"}
	pod := runTestPod(t, d, cfg)
	main, proxy := testID(pod+"main"), testID(pod+"proxy")
	for _, c := range []store.Container{
		{ID: main, SandboxID: pod, Name: "main", Key: pod + "/main_0", State: store.ContainerCreated},
		{ID: proxy, SandboxID: pod, Name: "proxy", Key: pod + "/proxy_0", State: store.ContainerRunning, PID: 100},
	} {
		if err := d.store.CreateContainer(c); err != nil {
			t.Fatal(err)
		}
	}
	d.shimOf(pod).EXPECT().StartContainer(gomock.Any(), main).Return(shim.Started{}, errors.New(`exec: "step": executable file not found in $PATH`))
	d.shimOf(pod).EXPECT().State(gomock.Any(), main).Return(shim.State{ID: main, Status: shim.StatusStopped}, nil)
	expectSidecar(d, pod, proxy, syscall.SIGTERM, exitsOnSignal)
	if _, err := intercept(t, d.srv.StartContainer, &runtimeapi.StartContainerRequest{ContainerId: main}); err == nil {
		t.Fatal("a start that failed succeeded")
	}
	waitFor(t, "the sidecar to be stopped", func() bool {
		return containerStatusOf(t, d, proxy).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
}
