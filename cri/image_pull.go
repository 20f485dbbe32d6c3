package cri

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/image"
	"ketch.dev/ketch/metrics"
)

// PullImage pulls the image and answers its ID, which kubelet then uses as
// the container's image reference.
func (s *Server) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("pull image: image reference is empty: %w", errdefs.ErrInvalidArgument)
	}
	var auth *image.Auth
	if a := req.GetAuth(); a != nil {
		auth = &image.Auth{
			Username:      a.Username,
			Password:      a.Password,
			Auth:          a.Auth,
			IdentityToken: a.IdentityToken,
			RegistryToken: a.RegistryToken,
			ServerAddress: a.ServerAddress,
		}
	}
	metrics.ImagePullsInProgress.Inc()
	defer metrics.ImagePullsInProgress.Dec()
	start := time.Now()
	img, err := s.images.Pull(ctx, ref, auth)
	metrics.ImagePulls.WithLabelValues(status.Code(toStatus(err)).String()).Inc()
	if err != nil {
		return nil, err
	}
	metrics.Since(metrics.ImagePullDuration, start)
	metrics.ImagePullBytes.Add(float64(img.Size))
	return &runtimeapi.PullImageResponse{ImageRef: img.ID}, nil
}
