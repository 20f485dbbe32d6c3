package cri

import (
	"context"
	"maps"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	"go.uber.org/mock/gomock"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/sandbox"
)

// TestNewRefusesOpenStreamAddress: a streaming address off loopback
// without TLS fails New, and what New started (the watchers of the pods it
// adopted) is stopped before it returns.
func TestNewRefusesOpenStreamAddress(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pod := storePod(t, st, "web")
	ctrl := gomock.NewController(t)
	images, network, sandboxes, containers := NewMockImageStore(ctrl), NewMockNetwork(ctrl), NewMockSandboxes(ctrl), NewMockContainers(ctrl)
	sandboxes.EXPECT().Collect(gomock.Any(), gomock.Any()).Return(nil)
	containers.EXPECT().ContainerDirs().Return(nil, nil).Times(2)
	sandboxes.EXPECT().NotifyShimLost(gomock.Any())
	sandboxes.EXPECT().Adopt(specOf(pod, "web")).Return(nil)
	var waits, returned atomic.Int32
	sandboxes.EXPECT().Wait(gomock.Any(), podWithID(pod)).DoAndReturn(func(ctx context.Context, _ sandbox.Spec) error {
		waits.Add(1)
		defer returned.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}).MaxTimes(1) // New may fail before the watch begins
	_, err = New(Config{StreamAddress: "0.0.0.0:0"}, images, network, st, sandboxes, containers)
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("New with an open streaming address: %v, want InvalidArgument", err)
	}
	if waits.Load() != returned.Load() {
		t.Error("New failed and left a pod's watcher running")
	}
}

// TestCountStates: ketchd's metrics count the pods and containers the
// store holds, by state.
func TestCountStates(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	a := runTestPod(t, d, testPodConfig("a"))
	runTestPod(t, d, testPodConfig("b"))
	for i, state := range []store.ContainerState{store.ContainerRunning, store.ContainerExited, store.ContainerExited, store.ContainerCreated} {
		name := string(rune('p' + i))
		if err := d.store.CreateContainer(store.Container{ID: testID(name), SandboxID: a, Name: name, Key: a + "/" + name + "_0", State: state}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.store.UpdateSandbox(a, func(sb *store.Sandbox) error { sb.State = store.SandboxNotReady; return nil }); err != nil {
		t.Fatal(err)
	}
	pods, ctrs, err := d.srv.CountStates()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"ready": 1, "notready": 1}; !maps.Equal(pods, want) {
		t.Errorf("pods %v, want %v", pods, want)
	}
	if want := map[string]int{"running": 1, "exited": 2, "created": 1}; !maps.Equal(ctrs, want) {
		t.Errorf("containers %v, want %v", ctrs, want)
	}
}
