package cri

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"go.uber.org/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// A List answer over the message limit is refused as ResourceExhausted,
// naming the Stream RPC; the Stream RPC answers the same items, with the
// same filters, in several messages.
func TestListLimitAndStreams(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	pod := runTestPod(t, d, testPodConfig("web"))
	other := runTestPod(t, d, testPodConfig("other"))
	note := strings.Repeat("x", 1000) // as a workflow engine annotates its steps
	for i := range 30 {
		p := pod
		if i%3 == 0 {
			p = other
		}
		c := store.Container{ID: fmt.Sprintf("c%02d", i), SandboxID: p, Name: "step", Key: fmt.Sprintf("%s/step_%d", p, i),
			State: store.ContainerExited, Image: "busybox", Annotations: map[string]string{"workflow": note}}
		if err := d.store.CreateContainer(c); err != nil {
			t.Fatal(err)
		}
	}
	oldMax, oldBatch := maxListMessage, streamBatch
	maxListMessage, streamBatch = 20_000, 5_000
	t.Cleanup(func() { maxListMessage, streamBatch = oldMax, oldBatch })

	conn := dialTestServer(t, d.srv)
	rt := runtimeapi.NewRuntimeServiceClient(conn)

	_, err := rt.ListContainers(t.Context(), &runtimeapi.ListContainersRequest{})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "StreamContainers") {
		t.Errorf("ListContainers of 30 containers over a 20 kB limit: %v, want ResourceExhausted naming StreamContainers", err)
	}
	// Under the limit, List answers as before.
	if resp, err := rt.ListPodSandbox(t.Context(), &runtimeapi.ListPodSandboxRequest{}); err != nil || len(resp.Items) != 2 {
		t.Errorf("ListPodSandbox: %v, %v", resp, err)
	}

	for _, tc := range []struct {
		desc   string
		filter *runtimeapi.ContainerFilter
		want   int
	}{
		{"all", nil, 30},
		{"one pod", &runtimeapi.ContainerFilter{PodSandboxId: other}, 10},
		{"exited", &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_EXITED}}, 30},
		{"running", &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}, 0},
		{"one ID", &runtimeapi.ContainerFilter{Id: "c07"}, 1},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			stream, err := rt.StreamContainers(t.Context(), &runtimeapi.StreamContainersRequest{Filter: tc.filter})
			if err != nil {
				t.Fatal(err)
			}
			seen, msgs := map[string]bool{}, 0
			for {
				resp, err := stream.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("after %d messages: %v", msgs, err)
				}
				msgs++
				if len(resp.Containers) == 0 {
					t.Error("an empty message")
				}
				for _, c := range resp.Containers {
					if seen[c.Id] {
						t.Errorf("container %s sent twice", c.Id)
					}
					seen[c.Id] = true
				}
			}
			if len(seen) != tc.want {
				t.Errorf("got %d containers in %d messages, want %d", len(seen), msgs, tc.want)
			}
			// About 1 kB a container, 5 kB a message.
			if tc.want == 30 && msgs < 6 {
				t.Errorf("30 containers came in %d messages, want batches of at most 5 kB", msgs)
			}
		})
	}

	imgs := runtimeapi.NewImageServiceClient(conn)
	d.images.EXPECT().List(gomock.Any()).Return(nil, nil)
	stream, err := imgs.StreamImages(t.Context(), &runtimeapi.StreamImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != io.EOF {
		t.Errorf("StreamImages of no images: %v, %v; want the end of the stream", resp, err)
	}
}
