package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"go.uber.org/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/image"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

// The steps of a CreateContainer, in order; a create that fails at one
// undoes those before it.
const (
	stepImage = iota
	stepDir
	stepRootfs
	stepSpec // the request's own failure: err is not used
	stepShim
	stepDone
)

// expectCreateUntil sets the calls of a CreateContainer in pod whose step
// fail fails with err (stepDone: none fails), and of the undoing of the
// steps made before it. It returns the spec the shim got, once it has.
func expectCreateUntil(t *testing.T, d *testDeps, pod string, fail int, err error) func() *specs.Spec {
	t.Helper()
	return expectCreateWith(t, d, pod, fail, err, nil)
}

// expectCreateWith is expectCreateUntil whose shim runs inShim, if set,
// before it answers.
func expectCreateWith(t *testing.T, d *testDeps, pod string, fail int, err error, inShim func()) func() *specs.Spec {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"hosts", "resolv.conf", "hostname"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d.containers.EXPECT().Paths(gomock.Any()).Return(sandbox.PodPaths{NetNS: "/run/ketch/netns/x", Hosts: filepath.Join(dir, "hosts"),
		ResolvConf: filepath.Join(dir, "resolv.conf"), Hostname: filepath.Join(dir, "hostname"),
		Namespaces: map[string]string{"ipc": filepath.Join(dir, "ipcns"), "uts": filepath.Join(dir, "utsns"), "pid": filepath.Join(dir, "pidns")}}).AnyTimes()
	d.containers.EXPECT().ContainerRootfs(gomock.Any()).DoAndReturn(func(id string) string {
		return filepath.Join(dir, id, "rootfs")
	}).AnyTimes()
	errAt := func(step int) error {
		if step == fail {
			return err
		}
		return nil
	}
	var spec *specs.Spec
	got := func() *specs.Spec { return spec }
	d.images.EXPECT().Get(gomock.Any(), "busybox").Return(image.Image{ID: "sha256:busybox"}, errAt(stepImage))
	if fail == stepImage {
		return got
	}
	d.containers.EXPECT().MakeContainerDir(gomock.Any(), -1).Return(errAt(stepDir))
	if fail == stepDir {
		return got
	}
	d.images.EXPECT().Prepare(gomock.Any(), gomock.Any(), "sha256:busybox", gomock.Any()).DoAndReturn(
		func(_ context.Context, _, _, target string, _ ...image.PrepareOpt) (image.Image, error) {
			if err := errAt(stepRootfs); err != nil {
				return image.Image{}, err
			}
			return image.Image{}, os.MkdirAll(target, 0o700)
		})
	if fail > stepRootfs && fail != stepDone {
		// Undone: the rootfs, then the directory it was mounted in.
		d.images.EXPECT().Release(gomock.Any(), gomock.Any(), gomock.Any()).Return(nil)
	}
	if fail != stepDone {
		d.containers.EXPECT().RemoveContainerDir(gomock.Any()).Return(nil)
	}
	if fail < stepShim {
		return got
	}
	d.shimOf(pod).EXPECT().CreateContainer(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
		func(_ context.Context, _ string, s *specs.Spec, _ shim.ContainerOptions) error {
			if inShim != nil {
				inShim()
			}
			spec = s
			return errAt(stepShim)
		})
	return got
}

func createRequest(pod, name string) *runtimeapi.CreateContainerRequest {
	return &runtimeapi.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: testPodConfig("web"),
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name}, Image: &runtimeapi.ImageSpec{Image: "busybox"},
			Command: []string{"sh"}}}
}

// TestCreateContainerUndo: a create that fails at any step returns the
// failure's code, undoes what it made (and makes nothing past it), leaves
// no record, and frees the name for kubelet's retry.
func TestCreateContainerUndo(t *testing.T) {
	for _, tc := range []struct {
		desc string
		fail int
		err  error
		code codes.Code
	}{
		{"image not pulled", stepImage, fmt.Errorf("image busybox: %w", errdefs.ErrNotFound), codes.NotFound},
		{"container directory", stepDir, fmt.Errorf("mkdir: %w", errdefs.ErrUnavailable), codes.Unavailable},
		{"rootfs", stepRootfs, fmt.Errorf("snapshot: %w", errdefs.ErrFailedPrecondition), codes.FailedPrecondition},
		{"shim", stepShim, fmt.Errorf("runc create: %w", errdefs.ErrUnavailable), codes.Unavailable},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{})
			blockWait(d.sandboxes)
			pod := runTestPod(t, d, testPodConfig("web"))
			expectCreateUntil(t, d, pod, tc.fail, tc.err)
			if _, err := intercept(t, d.srv.CreateContainer, createRequest(pod, "app")); status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			if ctrs, _ := d.store.ListContainers(store.ContainerFilter{}); len(ctrs) != 0 {
				t.Errorf("a failed create left records: %v", ctrs)
			}
			if l := listContainers(t, runtimeapi.NewRuntimeServiceClient(dialTestServer(t, d.srv)), nil); len(l) != 0 {
				t.Errorf("a failed create is listed: %v", l)
			}
			expectCreateUntil(t, d, pod, stepDone, nil)
			resp, err := intercept(t, d.srv.CreateContainer, createRequest(pod, "app"))
			if err != nil {
				t.Fatalf("kubelet's retry: %v", err)
			}
			if s := containerStatusOf(t, d, resp.ContainerId); s.State != runtimeapi.ContainerState_CONTAINER_CREATED || s.Metadata.Name != "app" {
				t.Errorf("after the retry: %v", s)
			}
		})
	}
}

// TestCreateContainerRefused: a create kubelet must not retry as is, or
// in a pod that cannot take it, is refused before anything is made (no
// EXPECT beyond the pod's).
func TestCreateContainerRefused(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	pod := runTestPod(t, d, testPodConfig("web"))
	stopped := runTestPod(t, d, testPodConfig("stopped"))
	d.sandboxes.EXPECT().Stop(gomock.Any(), gomock.Any()).Return(nil)
	if _, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: stopped}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc   string
		mutate func(*runtimeapi.CreateContainerRequest)
		code   codes.Code
	}{
		{"no config", func(r *runtimeapi.CreateContainerRequest) { r.Config = nil }, codes.InvalidArgument},
		{"no name", func(r *runtimeapi.CreateContainerRequest) { r.Config.Metadata.Name = "" }, codes.InvalidArgument},
		{"no image", func(r *runtimeapi.CreateContainerRequest) { r.Config.Image = nil }, codes.InvalidArgument},
		{"unknown stop signal", func(r *runtimeapi.CreateContainerRequest) { r.Config.StopSignal = 999 }, codes.InvalidArgument},
		{"log path out of the pod's directory", func(r *runtimeapi.CreateContainerRequest) { r.Config.LogPath = "../x.log" }, codes.InvalidArgument},
		{"absolute log path", func(r *runtimeapi.CreateContainerRequest) { r.Config.LogPath = "/var/log/x.log" }, codes.InvalidArgument},
		{"no pod ID", func(r *runtimeapi.CreateContainerRequest) { r.PodSandboxId = "" }, codes.InvalidArgument},
		{"unknown pod", func(r *runtimeapi.CreateContainerRequest) { r.PodSandboxId = "ffff" }, codes.NotFound},
		{"stopped pod", func(r *runtimeapi.CreateContainerRequest) { r.PodSandboxId = stopped }, codes.FailedPrecondition},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			req := createRequest(pod, "app")
			tc.mutate(req)
			if _, err := intercept(t, d.srv.CreateContainer, req); status.Code(err) != tc.code {
				t.Errorf("got %v, want %v", err, tc.code)
			}
			if ctrs, _ := d.store.ListContainers(store.ContainerFilter{}); len(ctrs) != 0 {
				t.Errorf("a refused create left records: %v", ctrs)
			}
		})
	}
}

// TestCreateContainerNameTaken: a second container of the same name and
// attempt in a pod is refused as AlreadyExists before its image is
// mounted; the first is kept.
func TestCreateContainerNameTaken(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	pod := runTestPod(t, d, testPodConfig("web"))
	expectCreateUntil(t, d, pod, stepDone, nil)
	first, err := intercept(t, d.srv.CreateContainer, createRequest(pod, "app"))
	if err != nil {
		t.Fatal(err)
	}
	d.images.EXPECT().Get(gomock.Any(), "busybox").Return(image.Image{ID: "sha256:busybox"}, nil)
	if _, err := intercept(t, d.srv.CreateContainer, createRequest(pod, "app")); status.Code(err) != codes.AlreadyExists {
		t.Errorf("the same name again: %v, want AlreadyExists", err)
	}
	if s := containerStatusOf(t, d, first.ContainerId); s.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Errorf("the first container is %v", s.State)
	}
}

// TestCreateContainerPIDTarget: a container may share the PID namespace
// of a running container of its pod only; otherwise the create fails as
// FailedPrecondition, undone before the shim is asked.
func TestCreateContainerPIDTarget(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		target func(pod, other string) string
		state  store.ContainerState // of the pod's target
		code   codes.Code
	}{
		{"a running container of the pod", func(pod, _ string) string { return testID(pod + "target") }, store.ContainerRunning, codes.OK},
		{"a created one", func(pod, _ string) string { return testID(pod + "target") }, store.ContainerCreated, codes.FailedPrecondition},
		{"one of another pod", func(_, other string) string { return testID(other + "target") }, store.ContainerRunning, codes.FailedPrecondition},
		{"an unknown one", func(string, string) string { return "ffff" }, store.ContainerRunning, codes.FailedPrecondition},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{})
			blockWait(d.sandboxes)
			pod := runTestPod(t, d, testPodConfig("web"))
			other := runTestPod(t, d, testPodConfig("other"))
			for _, p := range []string{pod, other} {
				state := store.ContainerRunning
				if p == pod {
					state = tc.state
				}
				if err := d.store.CreateContainer(store.Container{ID: testID(p + "target"), SandboxID: p, Name: "target", Key: p + "/target_0",
					State: state, PID: 4242}); err != nil {
					t.Fatal(err)
				}
			}
			fail := stepDone
			if tc.code != codes.OK {
				fail = stepSpec
			}
			spec := expectCreateUntil(t, d, pod, fail, nil)
			req := createRequest(pod, "debug")
			req.Config.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: tc.target(pod, other)}}}
			if _, err := intercept(t, d.srv.CreateContainer, req); status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			if tc.code != codes.OK {
				if ctrs, _ := d.store.ListContainers(store.ContainerFilter{SandboxID: pod}); len(ctrs) != 1 {
					t.Errorf("a refused create left records: %v", ctrs)
				}
				return
			}
			var pidNS *specs.LinuxNamespace
			for i, ns := range spec().Linux.Namespaces {
				if ns.Type == specs.PIDNamespace {
					pidNS = &spec().Linux.Namespaces[i]
				}
			}
			if pidNS == nil || pidNS.Path != "/proc/4242/ns/pid" {
				t.Errorf("PID namespace %+v, want the target's, /proc/4242/ns/pid", pidNS)
			}
		})
	}
}
