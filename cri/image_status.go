package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/image"
)

// ImageStatus answers a nil image, not an error, for an image that is not
// there: kubelet asks before every pull.
func (s *Server) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image status: image reference is empty: %w", errdefs.ErrInvalidArgument)
	}
	img, err := s.images.Get(ctx, ref)
	if errdefs.IsNotFound(err) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ImageStatusResponse{Image: toCRIImage(img)}
	if req.GetVerbose() {
		info, err := json.Marshal(verboseImage{ID: img.ID, ChainID: img.ChainID.String(), ImageSpec: img.Config})
		if err != nil {
			return nil, fmt.Errorf("image status %s: encode info: %w", img.ID, err)
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

// verboseImage is the "info" of a verbose ImageStatus, shaped like
// containerd's so tools that read one read the other.
type verboseImage struct {
	ID        string `json:"id"`
	ChainID   string `json:"chainID"`
	ImageSpec any    `json:"imageSpec"`
}

// ListImages lists every image, or the one a filter names.
func (s *Server) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	items, err := s.listImages(ctx, req.GetFilter())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListImagesResponse{Images: items}
	return resp, checkListSize(resp, "ListImages", "StreamImages", len(items))
}

func (s *Server) listImages(ctx context.Context, f *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	var imgs []image.Image
	if ref := f.GetImage().GetImage(); ref != "" {
		img, err := s.images.Get(ctx, ref)
		switch {
		case errdefs.IsNotFound(err):
		case err != nil:
			return nil, err
		default:
			imgs = append(imgs, img)
		}
	} else {
		var err error
		if imgs, err = s.images.List(ctx); err != nil {
			return nil, err
		}
	}
	items := make([]*runtimeapi.Image, 0, len(imgs))
	for _, img := range imgs {
		items = append(items, toCRIImage(img))
	}
	return items, nil
}

func toCRIImage(img image.Image) *runtimeapi.Image {
	out := &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        img.Size,
		Spec:        &runtimeapi.ImageSpec{Image: img.ID, Annotations: img.Config.Config.Labels},
	}
	uid, name := imageUser(img.Config.Config.User)
	if uid != nil {
		out.Uid = &runtimeapi.Int64Value{Value: *uid}
	}
	out.Username = name
	return out
}

// imageUser splits an image config's User ("uid", "name", "uid:gid",
// "name:group") into the uid or the user name kubelet checks runAsNonRoot
// against. A numeric user yields the uid; a name yields the name.
func imageUser(user string) (*int64, string) {
	user, _, _ = strings.Cut(user, ":")
	if user == "" {
		return nil, ""
	}
	if uid, err := strconv.ParseInt(user, 10, 64); err == nil {
		return &uid, ""
	}
	return nil, user
}
