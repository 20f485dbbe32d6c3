package cri

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Image volumes (KEP-4639): a Mount that names an image instead of a host
// path gets the image's file system, read-only. Each is a read-only
// snapshot mounted at <container dir>/volumes/<n>, beside the rootfs,
// keyed <container id>/volume-<n>, so that releasing the container (also
// after a crash) releases them.

// mountImageVolumes mounts cfg's image volumes for container id and
// returns a copy of cfg with each pointing at its mount (or image_sub_path
// in it); releaseImageVolumes ends them, also those mounted before a
// failure. The image must have been pulled (kubelet pulls it first):
// NotFound otherwise.
func (s *Server) mountImageVolumes(ctx context.Context, id string, cfg *runtimeapi.ContainerConfig) (*runtimeapi.ContainerConfig, error) {
	out := cfg
	for i, m := range cfg.GetMounts() {
		ref := m.GetImage().GetImage()
		if ref == "" {
			continue
		}
		if m.GetHostPath() != "" {
			return nil, fmt.Errorf("mount %s names both a host path and an image: %w", m.GetContainerPath(), errdefs.ErrInvalidArgument)
		}
		sub := m.GetImageSubPath()
		if sub != "" && !filepath.IsLocal(sub) {
			return nil, fmt.Errorf("mount %s: image_sub_path %q must be relative and inside the image: %w", m.GetContainerPath(), sub, errdefs.ErrInvalidArgument)
		}
		target := s.imageVolumePath(id, i)
		if _, err := s.images.View(ctx, imageVolumeKey(id, i), ref, target); err != nil {
			return nil, fmt.Errorf("image volume %s: %w", m.GetContainerPath(), err)
		}
		src := target
		if sub != "" {
			// Resolved inside the image: a symlink in it leads nowhere else.
			p, err := securejoin.SecureJoin(target, sub)
			if err != nil {
				return nil, fmt.Errorf("image volume %s: image_sub_path %q: %w", m.GetContainerPath(), sub, errdefs.ErrInvalidArgument)
			}
			if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("image volume %s: image_sub_path %q is not in image %s: %w", m.GetContainerPath(), sub, ref, errdefs.ErrNotFound)
			} else if err != nil {
				return nil, fmt.Errorf("image volume %s: %w", m.GetContainerPath(), err)
			}
			src = p
		}
		if out == cfg {
			out = proto.CloneOf(cfg)
		}
		out.Mounts[i].HostPath = src
		out.Mounts[i].Readonly = true
	}
	return out, nil
}

// releaseImageVolumes releases whatever image volumes container id has.
func (s *Server) releaseImageVolumes(ctx context.Context, id string) error {
	dir := s.imageVolumesDir(id)
	dirs, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		n, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		errs = append(errs, s.images.Release(ctx, imageVolumeKey(id, n), s.imageVolumePath(id, n)))
	}
	return errors.Join(append(errs, os.Remove(dir))...)
}

// imageVolumesDir holds container id's image volumes, beside its rootfs.
func (s *Server) imageVolumesDir(id string) string {
	return filepath.Join(filepath.Dir(s.containers.ContainerRootfs(id)), "volumes")
}

func (s *Server) imageVolumePath(id string, n int) string {
	return filepath.Join(s.imageVolumesDir(id), strconv.Itoa(n))
}

func imageVolumeKey(id string, n int) string { return id + "/volume-" + strconv.Itoa(n) }
