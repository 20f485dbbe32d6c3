package cri

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.uber.org/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

// podWithContainers runs pod "web" with a running container ("app") and
// an exited one ("done"), both without watchers.
func podWithContainers(t *testing.T, d *testDeps) (pod, app, done string) {
	t.Helper()
	blockWait(d.sandboxes)
	pod = runTestPod(t, d, testPodConfig("web"))
	app, done = testID(pod+"app"), testID(pod+"done")
	for _, c := range []store.Container{
		{ID: app, SandboxID: pod, Name: "app", Key: pod + "/app_0", State: store.ContainerRunning, PID: 99, StartedAt: time.Now()},
		{ID: done, SandboxID: pod, Name: "done", Key: pod + "/done_0", State: store.ContainerExited},
	} {
		if err := d.store.CreateContainer(c); err != nil {
			t.Fatal(err)
		}
	}
	return pod, app, done
}

// TestStopPodSandboxKillsContainers: a pod's stop KILLs its running
// containers at once (no grace, as the CRI asks) and records their exits
// before the pod is stopped; a container that cannot be stopped fails the
// stop, the pod's own stop is not attempted, and kubelet's retry finishes.
func TestStopPodSandboxKillsContainers(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		killErr error
		code    codes.Code
	}{
		{desc: "killed"},
		{desc: "gone meanwhile", killErr: fmt.Errorf("container: %w", errdefs.ErrNotFound)},
		{desc: "the shim fails", killErr: fmt.Errorf("shim: %w", errdefs.ErrUnavailable), code: codes.Unavailable},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{})
			pod, app, done := podWithContainers(t, d)
			kill := d.containers.EXPECT().SignalContainer(gomock.Any(), pod, app, syscall.SIGKILL, true).Return(tc.killErr)
			if tc.killErr == nil {
				wait := d.containers.EXPECT().WaitContainer(gomock.Any(), pod, app).Return(shim.Exit{Code: 137, Signal: syscall.SIGKILL, At: time.Now()}, nil).After(kill)
				d.sandboxes.EXPECT().Stop(gomock.Any(), specOf(pod, "web")).Return(nil).After(wait)
			} else if tc.code == codes.OK {
				d.sandboxes.EXPECT().Stop(gomock.Any(), specOf(pod, "web")).Return(nil).After(kill)
			}
			_, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod})
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			// NOTREADY from the first step on: nothing new is created in it.
			if rec, _ := d.store.GetSandbox(pod); rec.State != store.SandboxNotReady {
				t.Errorf("pod %s after the stop", rec.State)
			}
			if tc.killErr == nil {
				if s := containerStatusOf(t, d, app); s.State != runtimeapi.ContainerState_CONTAINER_EXITED || s.ExitCode != 137 {
					t.Errorf("app: %v exit %d, want EXITED 137", s.State, s.ExitCode)
				}
			}
			if s := containerStatusOf(t, d, done); s.State != runtimeapi.ContainerState_CONTAINER_EXITED {
				t.Errorf("done: %v", s.State)
			}
			if tc.code == codes.OK {
				return
			}
			// kubelet retries.
			kill = d.containers.EXPECT().SignalContainer(gomock.Any(), pod, app, syscall.SIGKILL, true).Return(nil)
			d.containers.EXPECT().WaitContainer(gomock.Any(), pod, app).Return(shim.Exit{Code: 137, At: time.Now()}, nil).After(kill)
			d.sandboxes.EXPECT().Stop(gomock.Any(), specOf(pod, "web")).Return(nil)
			if _, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
				t.Errorf("the retry: %v", err)
			}
		})
	}
}

// TestRemovePodSandboxFails: a pod whose container cannot be removed keeps
// its record, and the pod itself is not removed but marked for removal;
// the others are removed, and the retry removes the rest.
func TestRemovePodSandboxFails(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	pod := runTestPod(t, d, testPodConfig("web"))
	ok, stuck := testID(pod+"ok"), testID(pod+"stuck")
	for _, id := range []string{ok, stuck} {
		if err := d.store.CreateContainer(store.Container{ID: id, SandboxID: pod, Name: id[:8], Key: pod + "/" + id[:8] + "_0",
			State: store.ContainerExited}); err != nil {
			t.Fatal(err)
		}
	}
	d.containers.EXPECT().ContainerRootfs(gomock.Any()).Return(t.TempDir()).AnyTimes()
	d.containers.EXPECT().DeleteContainer(gomock.Any(), pod, ok).Return(nil)
	d.images.EXPECT().Release(gomock.Any(), ok, gomock.Any()).Return(nil)
	d.containers.EXPECT().RemoveContainerDir(ok).Return(nil)
	d.containers.EXPECT().DeleteContainer(gomock.Any(), pod, stuck).Return(errors.New("device or resource busy"))
	// No sandboxes.Remove: the pod is not removed while a container is.
	if _, err := intercept(t, d.srv.RemovePodSandbox, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err == nil {
		t.Fatal("a remove that failed succeeded")
	}
	rec, err := d.store.GetSandbox(pod)
	if err != nil || !rec.Removing || rec.State != store.SandboxNotReady {
		t.Errorf("pod after a failed remove: %+v, %v; want NOTREADY, marked for removal", rec, err)
	}
	if _, err := d.store.GetContainer(ok); !errdefs.IsNotFound(err) {
		t.Errorf("a container removed is still there: %v", err)
	}
	// Its pod is marked: a restart removes both.
	if c, err := d.store.GetContainer(stuck); err != nil || c.State != store.ContainerExited {
		t.Errorf("a container after its failed remove: %+v, %v; want its record as it was", c, err)
	}

	d.containers.EXPECT().DeleteContainer(gomock.Any(), pod, stuck).Return(nil)
	d.images.EXPECT().Release(gomock.Any(), stuck, gomock.Any()).Return(nil)
	d.containers.EXPECT().RemoveContainerDir(stuck).Return(nil)
	d.sandboxes.EXPECT().Remove(gomock.Any(), specOf(pod, "web")).Return(nil)
	if _, err := intercept(t, d.srv.RemovePodSandbox, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if _, err := intercept(t, d.srv.PodSandboxStatus, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod}); status.Code(err) != codes.NotFound {
		t.Errorf("status after the remove: %v, want NotFound", err)
	}
}

// TestStopPodSandboxWaitsForCreates: a pod's stop that comes while a
// container is being created in it refuses new creates at once, waits for
// the one under way, and stops the pod only once that is recorded.
func TestStopPodSandboxWaitsForCreates(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	pod := runTestPod(t, d, testPodConfig("web"))
	inShim, release := make(chan struct{}), make(chan struct{})
	expectCreateWith(t, d, pod, stepDone, nil, func() {
		close(inShim)
		<-release
	})
	created := make(chan *runtimeapi.CreateContainerResponse, 1)
	go func() {
		resp, err := intercept(t, d.srv.CreateContainer, createRequest(pod, "app"))
		if err != nil {
			t.Errorf("the create under way: %v", err)
		}
		created <- resp
	}()
	<-inShim
	d.sandboxes.EXPECT().Stop(gomock.Any(), specOf(pod, "web")).DoAndReturn(func(context.Context, sandbox.Spec) error {
		ctrs, _ := d.store.ListContainers(store.ContainerFilter{SandboxID: pod})
		if len(ctrs) != 1 || ctrs[0].State != store.ContainerCreated {
			t.Errorf("the pod stopped while a create was under way: %v", ctrs)
		}
		return nil
	})
	stopped := make(chan error, 1)
	go func() {
		_, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod})
		stopped <- err
	}()
	waitFor(t, "the stop to begin", func() bool {
		rec, _ := d.store.GetSandbox(pod)
		return rec.State == store.SandboxNotReady
	})
	// Another create now is refused (once the stop is done), before its
	// image is looked up.
	late := make(chan error, 1)
	go func() {
		_, err := intercept(t, d.srv.CreateContainer, createRequest(pod, "late"))
		late <- err
	}()
	close(release)
	if err := <-late; status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a create during the stop: %v, want FailedPrecondition", err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("the stop: %v", err)
	}
	if resp := <-created; resp != nil {
		if s := containerStatusOf(t, d, resp.ContainerId); s.State != runtimeapi.ContainerState_CONTAINER_CREATED {
			t.Errorf("the container created during the stop is %v", s.State)
		}
	}
}
