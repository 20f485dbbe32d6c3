package cri

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.uber.org/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

// openStore opens a store in a temporary file, as the one a previous
// ketchd left; it closes after the server built over it.
func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// restart builds a Server with cfg over st, as ketchd does when it starts over what
// an earlier one left: expect sets the calls New's clean-up and recovery
// are to make, before New runs; gomock fails the test on any other call,
// and on an expected one that did not happen.
func restart(t *testing.T, cfg Config, st *store.Store, expect func(*testDeps)) *testDeps {
	t.Helper()
	ctrl := gomock.NewController(t)
	d := &testDeps{images: NewMockImageStore(ctrl), network: NewMockNetwork(ctrl), sandboxes: NewMockSandboxes(ctrl),
		containers: NewMockContainers(ctrl), store: st, ctrl: ctrl, shims: map[string]*MockShim{}}
	dir := t.TempDir()
	d.containers.EXPECT().ContainerRootfs(gomock.Any()).DoAndReturn(func(id string) string {
		return filepath.Join(dir, id, "rootfs")
	}).AnyTimes()
	d.sandboxes.EXPECT().NotifyShimLost(gomock.Any()).AnyTimes()
	expect(d)
	srv, err := New(cfg, d.images, d.network, st, d.sandboxes, d.containers)
	if err != nil {
		t.Fatal(err)
	}
	d.srv = srv
	t.Cleanup(srv.Close)
	return d
}

// testID is a record ID, 64 hex digits as ketch makes them, derived from
// name.
func testID(name string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(name))) }

// storePod records a ready pod named name, as RunPodSandbox leaves it.
func storePod(t testing.TB, st *store.Store, name string) string {
	t.Helper()
	cfg := testPodConfig(name)
	raw, err := proto.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := testID("pod " + name)
	if err := st.CreateSandbox(store.Sandbox{ID: id, Name: name, Namespace: "ns", UID: "uid-" + name, Attempt: 1,
		Key: sandboxKey(cfg.Metadata), State: store.SandboxReady, CreatedAt: time.Now(), PID: 42, Config: raw}); err != nil {
		t.Fatal(err)
	}
	return id
}

// setPod puts pod id in state, marked for removal or not.
func setPod(t *testing.T, st *store.Store, id string, state store.SandboxState, removing bool) {
	t.Helper()
	if _, err := st.UpdateSandbox(id, func(sb *store.Sandbox) error {
		sb.State, sb.Removing = state, removing
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// storeContainer records container name of pod in state.
func storeContainer(t testing.TB, st *store.Store, pod, name string, state store.ContainerState, removing bool) string {
	t.Helper()
	id := testID("container " + pod + name)
	c := store.Container{ID: id, SandboxID: pod, Name: name, Key: pod + "/" + name + "_0", State: state,
		CreatedAt: time.Now(), Removing: removing}
	if state == store.ContainerRunning {
		c.PID, c.StartedAt = 99, time.Now()
	}
	if err := st.CreateContainer(c); err != nil {
		t.Fatal(err)
	}
	return id
}

// specOf matches the Spec pod id (named name) was run from.
func specOf(id, name string) gomock.Matcher {
	want := podSpec(id, testPodConfig(name))
	return gomock.Cond(func(s sandbox.Spec) bool { return reflect.DeepEqual(s, want) })
}

// expectAdopted expects the ready pod id (named name) to be adopted and
// watched, once at most: a test may end before the watch begins.
func expectAdopted(d *testDeps, id, name string) {
	d.sandboxes.EXPECT().Adopt(specOf(id, name)).Return(nil)
	d.sandboxes.EXPECT().Wait(gomock.Any(), podWithID(id)).DoAndReturn(func(ctx context.Context, _ sandbox.Spec) error {
		<-ctx.Done()
		return ctx.Err()
	}).MaxTimes(1)
}

// expectNothingLeft expects the sweep of what no record holds to find
// nothing; before it, the rootfs directories are those of containers dirs.
func expectNothingLeft(d *testDeps, dirs ...string) {
	d.sandboxes.EXPECT().Collect(gomock.Any(), gomock.Any()).Return(nil)
	d.containers.EXPECT().ContainerDirs().Return(dirs, nil)
	d.containers.EXPECT().ContainerDirs().Return(nil, nil)
}

// expectRemoved expects container id of pod to be deleted from its shim and
// its rootfs released, once each; deleteErr fails the delete, after which
// nothing else is done.
func expectRemoved(d *testDeps, pod, id string, deleteErr error) {
	d.containers.EXPECT().DeleteContainer(gomock.Any(), pod, id).Return(deleteErr)
	if deleteErr != nil {
		return
	}
	d.images.EXPECT().Release(gomock.Any(), id, d.containers.ContainerRootfs(id)).Return(nil)
	d.containers.EXPECT().RemoveContainerDir(id).Return(nil)
}

// TestCollectCutShortContainers: a container whose create or remove a
// crash cut short is removed at the next start, whatever state it was
// in; one whose removal fails keeps its record, to be found again; the
// server serves either way.
func TestCollectCutShortContainers(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		state     store.ContainerState
		removing  bool
		deleteErr error
		noRootfs  bool
		gone      bool
	}{
		{desc: "create cut short", state: store.ContainerCreating, gone: true},
		{desc: "remove of an exited one cut short", state: store.ContainerExited, removing: true, gone: true},
		{desc: "remove of a created one cut short", state: store.ContainerCreated, removing: true, gone: true},
		{desc: "remove of a running one cut short", state: store.ContainerRunning, removing: true, gone: true},
		// Its record goes beside its rootfs, which went first.
		{desc: "release of an exited one cut short", state: store.ContainerExited, noRootfs: true, gone: true},
		{desc: "the shim fails the delete", state: store.ContainerCreating, deleteErr: fmt.Errorf("shim: %w", errdefs.ErrUnavailable)},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st := openStore(t)
			pod := storePod(t, st, "web")
			id := storeContainer(t, st, pod, "app", tc.state, tc.removing)
			keep := storeContainer(t, st, pod, "done", store.ContainerExited, false)
			d := restart(t, Config{}, st, func(d *testDeps) {
				expectAdopted(d, pod, "web")
				if tc.noRootfs {
					expectNothingLeft(d, keep)
				} else {
					expectNothingLeft(d, id, keep)
				}
				if tc.state == store.ContainerRunning {
					// Killed, all its processes, and its exit waited for.
					gomock.InOrder(
						d.containers.EXPECT().SignalContainer(gomock.Any(), pod, id, syscall.SIGKILL, true).Return(nil),
						d.containers.EXPECT().WaitContainer(gomock.Any(), pod, id).Return(shim.Exit{Code: 137, At: time.Now()}, nil),
					)
				}
				expectRemoved(d, pod, id, tc.deleteErr)
			})
			_, err := intercept(t, d.srv.ContainerStatus, &runtimeapi.ContainerStatusRequest{ContainerId: id})
			if tc.gone && status.Code(err) != codes.NotFound {
				t.Errorf("status after the clean-up: %v, want NotFound", err)
			}
			if !tc.gone {
				rec, err := st.GetContainer(id)
				if err != nil || !rec.Removing && rec.State != store.ContainerCreating {
					t.Errorf("record after a failed clean-up: %+v, %v; want it kept for the next start", rec, err)
				}
			}
			if st := containerStatusOf(t, d, keep); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
				t.Errorf("an exited container of the same pod is %v after the clean-up", st.State)
			}
		})
	}
}

// TestCollectCutShortStarts: a created container whose StartContainer a
// crash may have cut short is asked of its shim: started, it is recorded
// running and watched; not started, it is left created; its shim gone, it
// is ended as the exit kubelet sees, ShimDied.
func TestCollectCutShortStarts(t *testing.T) {
	startedAt := time.Now().Add(-time.Minute).Truncate(time.Second)
	for _, tc := range []struct {
		desc      string
		state     shim.State
		stateErr  error
		deleteErr error // of a container whose shim is gone
		want      runtimeapi.ContainerState
		exitCode  int32
		reason    string
	}{
		{desc: "started", state: shim.State{Status: shim.StatusRunning, Pid: 77, StartedAt: startedAt},
			want: runtimeapi.ContainerState_CONTAINER_RUNNING},
		{desc: "not started", state: shim.State{Status: shim.StatusCreated}, want: runtimeapi.ContainerState_CONTAINER_CREATED},
		{desc: "the shim cannot say", stateErr: errors.New("ttrpc: closed"), want: runtimeapi.ContainerState_CONTAINER_CREATED},
		{desc: "shim gone (unavailable)", stateErr: fmt.Errorf("dial: %w", errdefs.ErrUnavailable),
			want: runtimeapi.ContainerState_CONTAINER_EXITED, exitCode: 255, reason: reasonShimDied},
		{desc: "shim gone (failed precondition)", stateErr: fmt.Errorf("pod stopped: %w", errdefs.ErrFailedPrecondition),
			want: runtimeapi.ContainerState_CONTAINER_EXITED, exitCode: 255, reason: reasonShimDied},
		{desc: "shim gone, its end fails", stateErr: errdefs.ErrUnavailable, deleteErr: errors.New("busy"),
			want: runtimeapi.ContainerState_CONTAINER_CREATED},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st := openStore(t)
			pod := storePod(t, st, "web")
			id := storeContainer(t, st, pod, "app", store.ContainerCreated, false)
			followed := make(chan struct{})
			d := restart(t, Config{}, st, func(d *testDeps) {
				expectAdopted(d, pod, "web")
				expectNothingLeft(d)
				d.shimOf(pod).EXPECT().State(gomock.Any(), id).Return(tc.state, tc.stateErr)
				if tc.stateErr != nil && (errdefs.IsUnavailable(tc.stateErr) || errdefs.IsFailedPrecondition(tc.stateErr)) {
					d.containers.EXPECT().DeleteContainer(gomock.Any(), pod, id).Return(tc.deleteErr)
				}
				if tc.want == runtimeapi.ContainerState_CONTAINER_RUNNING {
					// Followed like any container left running.
					d.containers.EXPECT().WaitContainer(gomock.Any(), pod, id).DoAndReturn(func(ctx context.Context, _, _ string) (shim.Exit, error) {
						close(followed)
						<-ctx.Done()
						return shim.Exit{}, ctx.Err()
					})
				}
			})
			if tc.want == runtimeapi.ContainerState_CONTAINER_RUNNING {
				waitFor(t, "the container's exit waited for", func() bool {
					select {
					case <-followed:
						return true
					default:
						return false
					}
				})
			}
			s := containerStatusOf(t, d, id)
			if s.State != tc.want || s.ExitCode != tc.exitCode || s.Reason != tc.reason {
				t.Errorf("after the restart: %v exit %d %q, want %v exit %d %q", s.State, s.ExitCode, s.Reason, tc.want, tc.exitCode, tc.reason)
			}
			if tc.want == runtimeapi.ContainerState_CONTAINER_RUNNING {
				if s.StartedAt != startedAt.UnixNano() {
					t.Errorf("started at %v, want the shim's %v", time.Unix(0, s.StartedAt), startedAt)
				}
				if rec, _ := st.GetContainer(id); rec.PID != 77 {
					t.Errorf("PID %d, want the shim's 77", rec.PID)
				}
			}
		})
	}
}

// TestCollectCutShortPods: a pod whose create or remove a crash cut short
// is removed, with its containers, at the next start; one whose removal
// fails keeps its record; pods that run or were stopped are not touched.
func TestCollectCutShortPods(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		state     store.SandboxState
		removing  bool
		removeErr error
		gone      bool
	}{
		{desc: "create cut short", state: store.SandboxCreating, gone: true},
		{desc: "remove cut short", state: store.SandboxNotReady, removing: true, gone: true},
		{desc: "remove of one being created cut short", state: store.SandboxCreating, removing: true, gone: true},
		{desc: "the manager fails the remove", state: store.SandboxNotReady, removing: true, removeErr: errors.New("umount: busy")},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st := openStore(t)
			pod := storePod(t, st, "web")
			exited := storeContainer(t, st, pod, "done", store.ContainerExited, false)
			created := storeContainer(t, st, pod, "next", store.ContainerCreated, false)
			setPod(t, st, pod, tc.state, tc.removing)
			stopped := storePod(t, st, "stopped")
			setPod(t, st, stopped, store.SandboxNotReady, false)
			running := storePod(t, st, "running")
			d := restart(t, Config{}, st, func(d *testDeps) {
				expectAdopted(d, running, "running")
				expectNothingLeft(d, exited, created)
				// Asked first, as any created container: its start was
				// not cut short.
				d.shimOf(pod).EXPECT().State(gomock.Any(), created).Return(shim.State{Status: shim.StatusCreated}, nil)
				expectRemoved(d, pod, exited, nil)
				expectRemoved(d, pod, created, nil)
				d.sandboxes.EXPECT().Remove(gomock.Any(), specOf(pod, "web")).Return(tc.removeErr)
			})
			_, err := intercept(t, d.srv.PodSandboxStatus, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod})
			if tc.gone && status.Code(err) != codes.NotFound {
				t.Errorf("status after the clean-up: %v, want NotFound", err)
			}
			if !tc.gone {
				if rec, err := st.GetSandbox(pod); err != nil || !rec.Removing {
					t.Errorf("record after a failed remove: %+v, %v; want it kept, marked for removal", rec, err)
				}
			}
			ctrs, _ := st.ListContainers(store.ContainerFilter{SandboxID: pod})
			if len(ctrs) != 0 {
				t.Errorf("containers of a removed pod left: %v", ctrs)
			}
			for _, id := range []string{stopped, running} {
				if _, err := st.GetSandbox(id); err != nil {
					t.Errorf("pod %s, neither created nor removed when ketchd died, is gone: %v", id, err)
				}
			}
			// Ready to serve: the stopped pod is listed NOTREADY, the
			// running one READY.
			l, err := intercept(t, d.srv.ListPodSandbox, &runtimeapi.ListPodSandboxRequest{})
			if err != nil {
				t.Fatal(err)
			}
			states := map[string]runtimeapi.PodSandboxState{}
			for _, p := range l.Items {
				states[p.Id] = p.State
			}
			if states[stopped] != runtimeapi.PodSandboxState_SANDBOX_NOTREADY || states[running] != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Errorf("listed %v", states)
			}
		})
	}
}

// TestCollectLeftovers: what no record holds (a pod's files, a container's
// rootfs) is swept, after the cut-short pods are removed; what a record
// holds is kept, whatever a prefix of its ID matches; a failing sweep does
// not keep the server from serving.
func TestCollectLeftovers(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		dirsErr error
	}{
		{desc: "swept"},
		{desc: "the state directory cannot be read", dirsErr: errors.New("permission denied")},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st := openStore(t)
			pod := storePod(t, st, "web")
			ctr := storeContainer(t, st, pod, "app", store.ContainerExited, false)
			gone := storePod(t, st, "gone")
			setPod(t, st, gone, store.SandboxCreating, false)
			orphan := testID("orphan")
			var known map[string]bool
			d := restart(t, Config{}, st, func(d *testDeps) {
				expectAdopted(d, pod, "web")
				d.sandboxes.EXPECT().Remove(gomock.Any(), specOf(gone, "gone")).Return(nil)
				d.sandboxes.EXPECT().Collect(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, f func(string) bool) error {
					known = map[string]bool{}
					for _, id := range []string{pod, pod[:12], gone, orphan, ""} {
						known[id] = f(id)
					}
					return errors.New("one netns busy")
				})
				dirs := []string{ctr, orphan, ctr[:12]}
				if tc.dirsErr != nil {
					dirs = nil
				}
				d.containers.EXPECT().ContainerDirs().Return(dirs, tc.dirsErr).Times(2)
				if tc.dirsErr == nil {
					for _, id := range []string{orphan, ctr[:12]} {
						d.images.EXPECT().Release(gomock.Any(), id, d.containers.ContainerRootfs(id)).Return(nil)
						d.containers.EXPECT().RemoveContainerDir(id).Return(nil)
					}
				}
			})
			want := map[string]bool{pod: true, pod[:12]: false, gone: false, orphan: false, "": false}
			if !reflect.DeepEqual(known, want) {
				t.Errorf("known to the sweep: %v, want %v", known, want)
			}
			if s := containerStatusOf(t, d, ctr); s.State != runtimeapi.ContainerState_CONTAINER_EXITED {
				t.Errorf("container with a record: %v after the sweep", s.State)
			}
		})
	}
}
