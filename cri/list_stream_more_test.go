package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.uber.org/mock/gomock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/image"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox"
)

// drain reads a Stream* RPC to its end and returns the IDs of the items
// each message carries (id picks them), and the number of messages.
func drain[R any](t *testing.T, stream grpc.ServerStreamingClient[R], ids func(*R) []string) ([]string, int, error) {
	t.Helper()
	var all []string
	msgs := 0
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return all, msgs, nil
		}
		if err != nil {
			return all, msgs, err
		}
		msgs++
		got := ids(resp)
		if len(got) == 0 {
			t.Error("an empty message")
		}
		all = append(all, got...)
	}
}

// smallBatches makes the Stream RPCs send about one pod a message.
func smallBatches(t *testing.T, n int) {
	old := streamBatch
	streamBatch = n
	t.Cleanup(func() { streamBatch = old })
}

// TestStreamPodSandboxes: StreamPodSandboxes answers what ListPodSandbox
// does, with the same filters, in batches, each pod once.
func TestStreamPodSandboxes(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	var pods []string
	for i := range 5 {
		pods = append(pods, runTestPod(t, d, testPodConfig(fmt.Sprint("web", i))))
	}
	d.sandboxes.EXPECT().Stop(gomock.Any(), gomock.Any()).Return(nil)
	if _, err := intercept(t, d.srv.StopPodSandbox, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pods[4]}); err != nil {
		t.Fatal(err)
	}
	smallBatches(t, 300)
	rt := runtimeapi.NewRuntimeServiceClient(dialTestServer(t, d.srv))
	for _, tc := range []struct {
		desc   string
		filter *runtimeapi.PodSandboxFilter
		want   []string
	}{
		{"all", nil, pods},
		{"ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, pods[:4]},
		{"not ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}, pods[4:]},
		{"by label", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "web2"}}, pods[2:3]},
		{"by ID prefix", &runtimeapi.PodSandboxFilter{Id: pods[1][:12]}, pods[1:2]},
		{"unknown ID", &runtimeapi.PodSandboxFilter{Id: "ffff"}, nil},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			stream, err := rt.StreamPodSandboxes(t.Context(), &runtimeapi.StreamPodSandboxesRequest{Filter: tc.filter})
			if err != nil {
				t.Fatal(err)
			}
			got, msgs, err := drain(t, stream, func(r *runtimeapi.StreamPodSandboxesResponse) []string {
				var ids []string
				for _, p := range r.PodSandboxes {
					ids = append(ids, p.Id)
				}
				return ids
			})
			if err != nil {
				t.Fatal(err)
			}
			list, err := rt.ListPodSandbox(t.Context(), &runtimeapi.ListPodSandboxRequest{Filter: tc.filter})
			if err != nil {
				t.Fatal(err)
			}
			var listed []string
			for _, p := range list.Items {
				listed = append(listed, p.Id)
			}
			slices.Sort(got)
			slices.Sort(listed)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(got, want) || !slices.Equal(listed, want) {
				t.Errorf("streamed %.12q, listed %.12q, want %.12q", got, listed, want)
			}
			if len(want) > 1 && msgs < 2 {
				t.Errorf("%d pods in %d message, want batches", len(want), msgs)
			}
		})
	}
}

// TestStreamImages: StreamImages answers every image, or the one the
// filter names, in batches; the store's failure ends the stream with its
// code.
func TestStreamImages(t *testing.T) {
	d := newTestDeps(t, Config{})
	smallBatches(t, 100)
	imgs := runtimeapi.NewImageServiceClient(dialTestServer(t, d.srv))
	var all []image.Image
	for i := range 4 {
		all = append(all, imageWithUser(""))
		all[i].ID = fmt.Sprintf("sha256:%064d", i)
		all[i].RepoTags = []string{fmt.Sprintf("registry.example/app:%d", i)}
	}
	ids := func(r *runtimeapi.StreamImagesResponse) []string {
		var ids []string
		for _, im := range r.Images {
			ids = append(ids, im.Id)
		}
		return ids
	}
	for _, tc := range []struct {
		desc   string
		filter *runtimeapi.ImageFilter
		expect func()
		want   []string
		code   codes.Code
	}{
		{desc: "all", expect: func() { d.images.EXPECT().List(gomock.Any()).Return(all, nil) },
			want: []string{all[0].ID, all[1].ID, all[2].ID, all[3].ID}},
		{desc: "one", filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "registry.example/app:2"}},
			expect: func() { d.images.EXPECT().Get(gomock.Any(), "registry.example/app:2").Return(all[2], nil) }, want: []string{all[2].ID}},
		{desc: "the store fails", expect: func() {
			d.images.EXPECT().List(gomock.Any()).Return(nil, fmt.Errorf("bolt: %w", errdefs.ErrUnavailable))
		}, code: codes.Unavailable},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			tc.expect()
			stream, err := imgs.StreamImages(t.Context(), &runtimeapi.StreamImagesRequest{Filter: tc.filter})
			if err != nil {
				t.Fatal(err)
			}
			got, msgs, err := drain(t, stream, ids)
			if status.Code(err) != tc.code {
				t.Fatalf("stream ended with %v, want %v", err, tc.code)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("streamed %v, want %v", got, tc.want)
			}
			if len(tc.want) > 1 && msgs < 2 {
				t.Errorf("%d images in %d message, want batches", len(tc.want), msgs)
			}
		})
	}
}

// TestStreamStats: StreamContainerStats, StreamPodSandboxStats and
// StreamPodSandboxMetrics answer what their List RPCs do: the running
// containers and ready pods, less one whose figures cannot be read (it
// stopped meanwhile).
func TestStreamStats(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	var pods, ctrs []string
	for i := range 3 {
		pod := runTestPod(t, d, testPodConfig(fmt.Sprint("web", i)))
		pods = append(pods, pod)
		for _, name := range []string{"app", "done"} {
			c := store.Container{ID: testID(pod + name), SandboxID: pod, Name: name, Key: pod + "/" + name + "_0", State: store.ContainerExited}
			if name == "app" {
				c.State, c.PID = store.ContainerRunning, 99
				ctrs = append(ctrs, c.ID)
			}
			if err := d.store.CreateContainer(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	gone := errors.New("shim: connection refused")
	// The last pod and its container stopped a moment ago.
	d.sandboxes.EXPECT().Stats(gomock.Any(), gomock.Any()).DoAndReturn(func(_ context.Context, s sandbox.Spec) (sandbox.Stats, error) {
		if s.ID == pods[2] {
			return sandbox.Stats{}, gone
		}
		return sandbox.Stats{Stats: shim.Stats{At: time.Now(), Cgroup: testCgroup()},
			Interfaces: []sandbox.Interface{{Name: "eth0", RxBytes: 1, TxBytes: 2}}}, nil
	}).AnyTimes()
	for _, pod := range pods {
		d.shimOf(pod).EXPECT().Stats(gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
			func(_ context.Context, id string, _ shim.StatsOptions) (shim.Stats, error) {
				if id == ctrs[2] {
					return shim.Stats{}, gone
				}
				return shim.Stats{At: time.Now(), Cgroup: testCgroup()}, nil
			}).AnyTimes()
	}
	d.images.EXPECT().WritableUsage(gomock.Any(), gomock.Any()).Return(uint64(4096), uint64(2), nil).AnyTimes()
	smallBatches(t, 100)
	rt := runtimeapi.NewRuntimeServiceClient(dialTestServer(t, d.srv))
	ctx := t.Context()

	for _, tc := range []struct {
		desc         string
		list, stream func() ([]string, error)
		want         []string
	}{
		{"container stats", func() ([]string, error) {
			resp, err := rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
			var ids []string
			for _, s := range resp.GetStats() {
				ids = append(ids, s.Attributes.Id)
			}
			return ids, err
		}, func() ([]string, error) {
			stream, err := rt.StreamContainerStats(ctx, &runtimeapi.StreamContainerStatsRequest{})
			if err != nil {
				return nil, err
			}
			ids, _, err := drain(t, stream, func(r *runtimeapi.StreamContainerStatsResponse) []string {
				var ids []string
				for _, s := range r.ContainerStats {
					ids = append(ids, s.Attributes.Id)
				}
				return ids
			})
			return ids, err
		}, ctrs[:2]},
		{"pod stats", func() ([]string, error) {
			resp, err := rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
			var ids []string
			for _, s := range resp.GetStats() {
				ids = append(ids, s.Attributes.Id)
			}
			return ids, err
		}, func() ([]string, error) {
			stream, err := rt.StreamPodSandboxStats(ctx, &runtimeapi.StreamPodSandboxStatsRequest{})
			if err != nil {
				return nil, err
			}
			ids, _, err := drain(t, stream, func(r *runtimeapi.StreamPodSandboxStatsResponse) []string {
				var ids []string
				for _, s := range r.PodSandboxStats {
					ids = append(ids, s.Attributes.Id)
				}
				return ids
			})
			return ids, err
		}, pods[:2]},
		{"pod metrics", func() ([]string, error) {
			resp, err := rt.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
			var ids []string
			for _, m := range resp.GetPodMetrics() {
				ids = append(ids, m.PodSandboxId)
			}
			return ids, err
		}, func() ([]string, error) {
			stream, err := rt.StreamPodSandboxMetrics(ctx, &runtimeapi.StreamPodSandboxMetricsRequest{})
			if err != nil {
				return nil, err
			}
			ids, _, err := drain(t, stream, func(r *runtimeapi.StreamPodSandboxMetricsResponse) []string {
				var ids []string
				for _, m := range r.PodSandboxMetrics {
					ids = append(ids, m.PodSandboxId)
				}
				return ids
			})
			return ids, err
		}, pods[:2]},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			streamed, err := tc.stream()
			if err != nil {
				t.Fatal(err)
			}
			listed, err := tc.list()
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Sorted(slices.Values(tc.want))
			slices.Sort(streamed)
			slices.Sort(listed)
			if !slices.Equal(streamed, want) || !slices.Equal(listed, want) {
				t.Errorf("streamed %.12q, listed %.12q, want %.12q", streamed, listed, want)
			}
		})
	}
}
