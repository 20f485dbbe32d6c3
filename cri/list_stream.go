package cri

import (
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Variables for the tests' sake.
var (
	// maxListMessage is the largest answer a List RPC gives: kubelet's CRI
	// client receives at most 16 MiB a message (crictl too), so a larger
	// one would fail on its side with a size error that names no remedy.
	maxListMessage = 16 << 20
	// streamBatch is how many bytes of items one Stream* message carries
	// at most: well under any client's limit, and few messages for a full
	// node.
	streamBatch = 1 << 20
)

// checkListSize refuses a List answer too large for kubelet's client,
// naming the Stream RPC (KEP-5825) that answers the same in batches.
func checkListSize(resp proto.Message, method, stream string, n int) error {
	if size := proto.Size(resp); size > maxListMessage {
		return fmt.Errorf("%s: %d items take %.1f MiB, over the %.0f MiB a CRI message may carry; %s answers them in batches: %w",
			method, n, float64(size)/(1<<20), float64(maxListMessage)/(1<<20), stream, errdefs.ErrResourceExhausted)
	}
	return nil
}

// sendBatches sends items in messages of at most streamBatch bytes each,
// at least one item a message.
func sendBatches[T proto.Message, R any](stream grpc.ServerStreamingServer[R], items []T, wrap func([]T) *R) error {
	start, size := 0, 0
	for i, it := range items {
		// An item's bytes, its field tag and its length.
		n := proto.Size(it) + 6
		if i > start && size+n > streamBatch {
			if err := stream.Send(wrap(items[start:i])); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += n
	}
	if start < len(items) {
		return stream.Send(wrap(items[start:]))
	}
	return nil
}

// The Stream* RPCs answer what their List RPC answers, with the same
// filters, in batches.

func (s *Server) StreamPodSandboxes(req *runtimeapi.StreamPodSandboxesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxesResponse]) error {
	items, err := s.listPodSandbox(req.GetFilter())
	if err != nil {
		return err
	}
	return sendBatches(stream, items, func(b []*runtimeapi.PodSandbox) *runtimeapi.StreamPodSandboxesResponse {
		return &runtimeapi.StreamPodSandboxesResponse{PodSandboxes: b}
	})
}

func (s *Server) StreamContainers(req *runtimeapi.StreamContainersRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainersResponse]) error {
	items, err := s.listContainers(req.GetFilter())
	if err != nil {
		return err
	}
	return sendBatches(stream, items, func(b []*runtimeapi.Container) *runtimeapi.StreamContainersResponse {
		return &runtimeapi.StreamContainersResponse{Containers: b}
	})
}

func (s *Server) StreamContainerStats(req *runtimeapi.StreamContainerStatsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainerStatsResponse]) error {
	items, err := s.listContainerStats(stream.Context(), req.GetFilter())
	if err != nil {
		return err
	}
	return sendBatches(stream, items, func(b []*runtimeapi.ContainerStats) *runtimeapi.StreamContainerStatsResponse {
		return &runtimeapi.StreamContainerStatsResponse{ContainerStats: b}
	})
}

func (s *Server) StreamPodSandboxStats(req *runtimeapi.StreamPodSandboxStatsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxStatsResponse]) error {
	items, err := s.listPodSandboxStats(stream.Context(), req.GetFilter())
	if err != nil {
		return err
	}
	return sendBatches(stream, items, func(b []*runtimeapi.PodSandboxStats) *runtimeapi.StreamPodSandboxStatsResponse {
		return &runtimeapi.StreamPodSandboxStatsResponse{PodSandboxStats: b}
	})
}

func (s *Server) StreamPodSandboxMetrics(req *runtimeapi.StreamPodSandboxMetricsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxMetricsResponse]) error {
	items, err := s.listPodSandboxMetrics(stream.Context())
	if err != nil {
		return err
	}
	return sendBatches(stream, items, func(b []*runtimeapi.PodSandboxMetrics) *runtimeapi.StreamPodSandboxMetricsResponse {
		return &runtimeapi.StreamPodSandboxMetricsResponse{PodSandboxMetrics: b}
	})
}

func (s *Server) StreamImages(req *runtimeapi.StreamImagesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamImagesResponse]) error {
	items, err := s.listImages(stream.Context(), req.GetFilter())
	if err != nil {
		return err
	}
	return sendBatches(stream, items, func(b []*runtimeapi.Image) *runtimeapi.StreamImagesResponse {
		return &runtimeapi.StreamImagesResponse{Images: b}
	})
}
