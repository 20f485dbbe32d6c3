package image

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// gcRoot keeps a container's writable snapshot from the garbage collector
// for as long as it exists: no image record refers to it, only the
// container that Release will end.
const gcRoot = "containerd.io/gc.root"

// PrepareOpt changes the rootfs Prepare makes.
type PrepareOpt func(labels map[string]string)

// WithIDMapping makes the rootfs for a user namespace whose IDs from 0 map
// to host IDs by uid and gid: the image's layers are mounted idmapped (the
// kernel shows their files to the namespace as its own, without a copy or
// chown of any layer) and the writable layer is owned by the namespace's
// root, so the container's root can write to its rootfs. This is
// containerd's overlay snapshotter's remapping, driven by its labels.
func WithIDMapping(uid, gid specs.LinuxIDMapping) PrepareOpt {
	return func(labels map[string]string) {
		labels[snapshots.LabelSnapshotUIDMapping] = fmt.Sprintf("%d:%d:%d", uid.ContainerID, uid.HostID, uid.Size)
		labels[snapshots.LabelSnapshotGIDMapping] = fmt.Sprintf("%d:%d:%d", gid.ContainerID, gid.HostID, gid.Size)
	}
}

// Prepare makes a fresh writable snapshot of the image ref names, keyed
// by key (a container ID), and mounts it at target (created if needed).
// It returns the image. A failure leaves no snapshot and no mount.
func (s *Store) Prepare(ctx context.Context, key, ref, target string, opts ...PrepareOpt) (Image, error) {
	return s.mountSnapshot(ctx, s.snap.Prepare, key, ref, target, opts)
}

// View mounts the file system of the image ref names read-only at target
// (created if needed), as a snapshot keyed by key, for an image volume;
// Release ends it. The image's layers stay while it exists, even if the
// image is removed meanwhile.
func (s *Store) View(ctx context.Context, key, ref, target string) (Image, error) {
	return s.mountSnapshot(ctx, s.snap.View, key, ref, target, nil)
}

func (s *Store) mountSnapshot(ctx context.Context, create func(context.Context, string, string, ...snapshots.Opt) ([]mount.Mount, error),
	key, ref, target string, opts []PrepareOpt) (_ Image, retErr error) {
	img, err := s.Get(ctx, ref)
	if err != nil {
		return Image{}, fmt.Errorf("rootfs of %s: %w", key, err)
	}
	labels := map[string]string{gcRoot: "container"}
	for _, o := range opts {
		o(labels)
	}
	ctx = s.ns(ctx)
	mounts, err := create(ctx, key, img.ChainID.String(), snapshots.WithLabels(labels))
	if errdefs.IsAlreadyExists(err) {
		return Image{}, fmt.Errorf("rootfs of %s exists: %w", key, err)
	}
	if err != nil {
		return Image{}, fmt.Errorf("rootfs of %s from %s: %w", key, img.ID, err)
	}
	defer func() {
		if retErr != nil {
			_ = s.snap.Remove(ctx, key)
		}
	}()
	if err := os.MkdirAll(target, 0o700); err != nil {
		return Image{}, fmt.Errorf("rootfs of %s: %w", key, err)
	}
	if err := mount.All(mounts, target); err != nil {
		return Image{}, fmt.Errorf("mount rootfs of %s: %w", key, err)
	}
	return img, nil
}

// Release unmounts target and removes snapshot key, and with it the
// container's writable layer. Releasing what is gone succeeds.
func (s *Store) Release(ctx context.Context, key, target string) error {
	// MNT_DETACH: a process still holding a file in the rootfs (a
	// leftover exec, an open log) must not keep the snapshot forever.
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount rootfs of %s: %w", key, err)
	}
	if err := s.snap.Remove(s.ns(ctx), key); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove rootfs of %s: %w", key, err)
	}
	// Last, after the slow part: a crash leaves the directory while
	// anything of the rootfs is left (package cri finishes a removal
	// whose rootfs directory is gone).
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rootfs of %s: %w", key, err)
	}
	// The snapshot's files go with the next collection, shortly.
	s.collectSoon()
	return nil
}

// WritableUsage is the disk the container's writable layer takes, for
// ContainerStats.
func (s *Store) WritableUsage(ctx context.Context, key string) (bytes, inodes uint64, err error) {
	u, err := s.snap.Usage(s.ns(ctx), key)
	if err != nil {
		return 0, 0, fmt.Errorf("usage of %s: %w", key, err)
	}
	return uint64(u.Size), uint64(u.Inodes), nil
}
