// Package cri serves the CRI v1 RuntimeService and ImageService over gRPC. It
// validates each request, translates CRI types to the owning package's types
// and back, and leaves the work to image/, sandbox/ and oci/. Errors from
// those packages carry containerd errdefs sentinels; one interceptor
// (interceptor.go) turns them into gRPC codes.
package cri

import (
	"context"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/image"
)

//go:generate go tool mockgen -destination=mock_deps_test.go -package=cri . ImageStore,NetworkChecker

// ImageStore is what the ImageService needs of image.Store.
type ImageStore interface {
	// Pull fetches and unpacks ref and returns the image it names.
	Pull(ctx context.Context, ref string, auth *image.Auth) (image.Image, error)
	// Get finds an image by ID, ID prefix or reference; errdefs.ErrNotFound
	// when there is none.
	Get(ctx context.Context, ref string) (image.Image, error)
	// List returns every image.
	List(ctx context.Context) ([]image.Image, error)
	// Remove deletes the image ref names, with all its names; nil when
	// there is no such image.
	Remove(ctx context.Context, ref string) error
	// Usage is the disk the image store takes.
	Usage(ctx context.Context) (image.Usage, error)
}

// NetworkChecker tells whether pod networking can be set up: nil once a CNI
// network config is loaded, otherwise why not.
type NetworkChecker interface {
	Ready() error
}

// Config is what the server reports about the node it runs on.
type Config struct {
	Version      string // ketch's own version
	CgroupDriver runtimeapi.CgroupDriver
}

// Server implements runtimeapi.RuntimeServiceServer and ImageServiceServer.
// RPCs whose issues have not landed answer Unimplemented through the embedded
// types.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	cfg     Config
	images  ImageStore
	network NetworkChecker
}

// New builds a Server over its dependencies.
func New(cfg Config, images ImageStore, network NetworkChecker) *Server {
	return &Server{cfg: cfg, images: images, network: network}
}

// Register serves s on g.
func (s *Server) Register(g *grpc.Server) {
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	runtimeapi.RegisterImageServiceServer(g, s)
}
