package cri

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// listContainers is what a client of ListContainers with filter f reads.
func listContainers(t testing.TB, rt runtimeapi.RuntimeServiceClient, f *runtimeapi.ContainerFilter) []*runtimeapi.Container {
	t.Helper()
	resp, err := rt.ListContainers(t.Context(), &runtimeapi.ListContainersRequest{Filter: f})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Containers
}

// TestListContainersEncoded: ListContainers answers from items encoded
// once per record revision, and a full list from the last one's bytes
// while nothing changed; what a client reads through gRPC follows every
// change and filter, whichever list sees a change first, and a removed
// container's item goes.
func TestListContainersEncoded(t *testing.T) {
	d := newTestDeps(t, Config{})
	rt := runtimeapi.NewRuntimeServiceClient(dialTestServer(t, d.srv))
	pod := storePod(t, d.store, "web")
	other := storePod(t, d.store, "db")
	a := storeContainer(t, d.store, pod, "a", store.ContainerCreated, false)
	b := storeContainer(t, d.store, pod, "b", store.ContainerRunning, false)
	c := storeContainer(t, d.store, other, "c", store.ContainerExited, false)
	creating := storeContainer(t, d.store, other, "creating", store.ContainerCreating, false)
	want := func(t *testing.T, f *runtimeapi.ContainerFilter, ids ...string) {
		t.Helper()
		var items []*runtimeapi.Container
		for _, id := range ids {
			rec, err := d.store.GetContainer(id)
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, containerItem(&rec))
		}
		got := listContainers(t, rt, f)
		if !slices.EqualFunc(items, got, func(a, b *runtimeapi.Container) bool { return proto.Equal(a, b) }) {
			t.Errorf("filter %v: listed %v, want %v", f, got, items)
		}
	}
	running := &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
	unknown := &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_UNKNOWN}
	for range 2 { // encoded, then from the encoded items
		want(t, nil, sortIDs(a, b, c)...)
		want(t, &runtimeapi.ContainerFilter{PodSandboxId: pod}, sortIDs(a, b)...)
		want(t, &runtimeapi.ContainerFilter{State: running}, b)
		want(t, &runtimeapi.ContainerFilter{Id: c[:12]}, c)
		want(t, &runtimeapi.ContainerFilter{State: unknown})
	}
	if _, err := d.store.ContainerStarted(a, 7, time.Now()); err != nil {
		t.Fatal(err)
	}
	want(t, &runtimeapi.ContainerFilter{State: running}, sortIDs(a, b)...)
	want(t, nil, sortIDs(a, b, c)...)
	if _, _, err := d.store.ContainerExited(b, store.Exit{Code: 3, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	want(t, nil, sortIDs(a, b, c)...)
	want(t, &runtimeapi.ContainerFilter{State: running}, a)
	if err := d.store.ContainerCreated(creating, store.User{}, nil, ""); err != nil {
		t.Fatal(err)
	}
	want(t, nil, sortIDs(a, b, c, creating)...)
	if err := d.store.DeleteContainer(creating); err != nil {
		t.Fatal(err)
	}
	want(t, nil, sortIDs(a, b, c)...)
	if err := d.store.DeleteContainer(c); err != nil {
		t.Fatal(err)
	}
	d.srv.listItems.mu.Lock()
	_, kept := d.srv.listItems.m[c]
	d.srv.listItems.mu.Unlock()
	if kept {
		t.Error("a removed container's item is kept")
	}
	want(t, nil, sortIDs(a, b)...)
}

// sortIDs is ids in ID order, the order lists come in.
func sortIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

// BenchmarkListContainers is kubelet's relist on a workflow node before
// its GC: 1,000 pods of 11 containers, 10 of them exited, with kubelet's
// labels and annotations, through gRPC.
func BenchmarkListContainers(b *testing.B) {
	d := newTestDeps(b, Config{})
	fillBench(b, d)
	rt := runtimeapi.NewRuntimeServiceClient(dialTestServer(b, d.srv))
	for b.Loop() {
		resp, err := rt.ListContainers(b.Context(), &runtimeapi.ListContainersRequest{}, grpc.MaxCallRecvMsgSize(16<<20))
		if err != nil || len(resp.Containers) != benchPods*benchPerPod {
			b.Fatal(len(resp.GetContainers()), err)
		}
	}
}

const benchPods, benchPerPod = 1000, 11

// fillBench stores a workflow node's containers: 1,000 pods of 11
// exited steps, with kubelet's labels and annotations.
func fillBench(b *testing.B, d *testDeps) {
	for p := range benchPods {
		pod := storePod(b, d.store, fmt.Sprintf("pod-%d", p))
		for i := range benchPerPod {
			name := fmt.Sprintf("step-%d", i)
			c := store.Container{ID: testID(pod + name), SandboxID: pod, Name: name, Key: pod + "/" + name + "_0",
				State: store.ContainerExited, CreatedAt: time.Now(), Image: "docker.io/library/busybox:1.36",
				ImageRef: "docker.io/library/busybox@sha256:" + testID("ref"), ImageID: "sha256:" + testID("img"),
				Labels: map[string]string{"io.kubernetes.container.name": name, "io.kubernetes.pod.name": fmt.Sprintf("pod-%d", p),
					"io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.uid": testID(pod)[:36]},
				Annotations: map[string]string{"io.kubernetes.container.hash": "8f3a2b1c", "io.kubernetes.container.restartCount": "0",
					"io.kubernetes.container.terminationMessagePath":   "/dev/termination-log",
					"io.kubernetes.container.terminationMessagePolicy": "File", "io.kubernetes.pod.terminationGracePeriod": "30"},
				LogPath: "/var/log/pods/default_pod_uid/" + name + "/0.log", Config: make([]byte, 2048)}
			if err := d.store.CreateContainer(c); err != nil {
				b.Fatal(err)
			}
		}
	}
}
