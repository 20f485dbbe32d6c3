package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/image"
	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/oci/shim"
)

// CreateContainer records the container (reserving its name in the pod),
// mounts a fresh snapshot of its image, builds its runtime spec and has the
// pod's shim set it up. Nothing runs until StartContainer. A failure at any
// step undoes the steps before it.
func (s *Server) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (_ *runtimeapi.CreateContainerResponse, retErr error) {
	cfg := req.GetConfig()
	switch {
	case cfg == nil || cfg.GetMetadata().GetName() == "":
		return nil, fmt.Errorf("create container: config with a metadata name is required: %w", errdefs.ErrInvalidArgument)
	case cfg.GetImage().GetImage() == "":
		return nil, fmt.Errorf("create container %s: image is empty: %w", cfg.GetMetadata().GetName(), errdefs.ErrInvalidArgument)
	case runtimeapi.Signal_name[int32(cfg.GetStopSignal())] == "":
		return nil, fmt.Errorf("create container %s: stop signal %d: %w", cfg.GetMetadata().GetName(), cfg.GetStopSignal(), errdefs.ErrInvalidArgument)
	case cfg.GetLogPath() != "" && !filepath.IsLocal(cfg.GetLogPath()):
		// The shim also resolves it inside the pod's log directory.
		return nil, fmt.Errorf("create container %s: log path %q must be relative and inside the pod's log directory: %w",
			cfg.GetMetadata().GetName(), cfg.GetLogPath(), errdefs.ErrInvalidArgument)
	}
	sb, err := s.findSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", cfg.GetMetadata().GetName(), err)
	}
	defer s.creates.enter(sb.ID, false)()
	if sb.State != store.SandboxReady {
		return nil, fmt.Errorf("create container %s: pod %s is not ready: %w", cfg.GetMetadata().GetName(), sb.ID, errdefs.ErrFailedPrecondition)
	}
	podCfg, err := storedPodConfig(sb)
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", cfg.GetMetadata().GetName(), err)
	}
	// Checked before anything is made: the rootfs depends on it.
	uids, gids, err := oci.UserNamespace(cfg, podCfg)
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", cfg.GetMetadata().GetName(), err)
	}
	var rootfsOpts []image.PrepareOpt
	if uids != nil {
		rootfsOpts = append(rootfsOpts, image.WithIDMapping(uids[0], gids[0]))
	}
	flow, err := oci.WorkflowOf(cfg, podCfg, s.cfg.Workflow.InitAlways)
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", cfg.GetMetadata().GetName(), err)
	}
	img, err := s.images.Get(ctx, cfg.GetImage().GetImage())
	if err != nil {
		return nil, fmt.Errorf("create container %s: image %q: %w", cfg.GetMetadata().GetName(), cfg.GetImage().GetImage(), err)
	}
	raw, err := proto.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	id := newID()
	md := cfg.GetMetadata()
	rec := store.Container{
		ID:          id,
		SandboxID:   sb.ID,
		Name:        md.GetName(),
		Attempt:     md.GetAttempt(),
		Key:         fmt.Sprintf("%s/%s_%d", sb.ID, md.GetName(), md.GetAttempt()),
		State:       store.ContainerCreating,
		CreatedAt:   time.Now(),
		Image:       cfg.GetImage().GetImage(),
		ImageRef:    imageRef(img.ID, img.RepoDigests),
		ImageID:     img.ID,
		StopSignal:  stopSignalOf(cfg, img.Config.Config.StopSignal),
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		Config:      raw,
		WantResult:  flow.Result,
	}
	if sb.LogDirectory != "" && cfg.GetLogPath() != "" {
		rec.LogPath = filepath.Join(sb.LogDirectory, cfg.GetLogPath())
	}
	if err := s.store.CreateContainer(rec); err != nil {
		return nil, fmt.Errorf("create container %s in pod %s: %w", md.GetName(), sb.ID, err)
	}
	var undo []func(context.Context) error
	defer func() {
		if retErr == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			if err := undo[i](ctx); err != nil {
				slog.Error("undo failed container create", "container", id, "pod", sb.ID, "err", err)
				retErr = errors.Join(retErr, err)
			}
		}
	}()
	undo = append(undo, func(context.Context) error { return s.store.DeleteContainer(id) })

	rootGID := -1
	if gids != nil {
		rootGID = int(gids[0].HostID)
	}
	if err := s.containers.MakeContainerDir(id, rootGID); err != nil {
		return nil, fmt.Errorf("create container %s: %w", id, err)
	}
	undo = append(undo, func(context.Context) error { return s.containers.RemoveContainerDir(id) })
	rootfs := s.containers.ContainerRootfs(id)
	if _, err := s.images.Prepare(ctx, id, img.ID, rootfs, rootfsOpts...); err != nil {
		return nil, fmt.Errorf("create container %s: %w", id, err)
	}
	undo = append(undo, func(ctx context.Context) error { return s.images.Release(ctx, id, rootfs) })
	undo = append(undo, func(ctx context.Context) error { return s.releaseImageVolumes(ctx, id) })
	specCfg, err := s.mountImageVolumes(ctx, id, cfg)
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", id, err)
	}

	spec, err := s.containerSpec(sb, podCfg, id, specCfg, img.Config.Config, rootfs)
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", id, err)
	}
	if flow.Init {
		oci.WithInit(spec, s.cfg.Workflow.InitBinary, s.cfg.Workflow.KillGrace)
	}
	o := shim.ContainerOptions{LogPath: rec.LogPath, LogDir: sb.LogDirectory, Stdin: cfg.GetStdin(), StdinOnce: cfg.GetStdinOnce(), Init: flow.Init}
	if flow.Result {
		o.ResultCap = s.cfg.Workflow.ResultCap
	}
	sh, err := s.containers.Shim(ctx, sb.ID)
	if err == nil {
		err = sh.CreateContainer(ctx, id, spec, o)
	}
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", id, err)
	}
	undo = append(undo, func(ctx context.Context) error { return s.containers.DeleteContainer(ctx, sb.ID, id) })

	u := spec.Process.User
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := s.store.ContainerCreated(id, store.User{UID: u.UID, GID: u.GID, Groups: u.AdditionalGids}, specJSON, spec.Linux.CgroupsPath); err != nil {
		return nil, fmt.Errorf("create container %s: %w", id, err)
	}
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

// containerSpec builds the runtime spec of container id in pod sb.
func (s *Server) containerSpec(sb store.Sandbox, podCfg *runtimeapi.PodSandboxConfig, id string, cfg *runtimeapi.ContainerConfig, imgCfg ocispec.ImageConfig, rootfs string) (*specs.Spec, error) {
	in := oci.Input{
		ID:           id,
		Config:       cfg,
		Pod:          podCfg,
		Image:        imgCfg,
		Rootfs:       rootfs,
		CgroupDriver: s.cfg.CgroupDriver,
	}
	paths := s.containers.Paths(podSpec(sb.ID, podCfg))
	in.CgroupParent, in.NetNSPath, in.HostsPath, in.ResolvConfPath, in.HostnamePath, in.ShmPath, in.SandboxNS =
		paths.CgroupParent, paths.NetNS, paths.Hosts, paths.ResolvConf, paths.Hostname, paths.Shm, paths.Namespaces
	if ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(); ns.GetPid() == runtimeapi.NamespaceMode_TARGET {
		target, err := s.store.GetContainer(ns.GetTargetId())
		if err != nil || target.SandboxID != sb.ID || target.State != store.ContainerRunning {
			return nil, fmt.Errorf("pid namespace target %q is not a running container of the pod: %w", ns.GetTargetId(), errdefs.ErrFailedPrecondition)
		}
		in.TargetPID = target.PID
	}
	return oci.Spec(in)
}

// imageRef is what kubelet reports as the container's imageID: a repo
// digest when the image has one, as containerd does, else the ID.
func imageRef(id string, digests []string) string {
	if len(digests) > 0 {
		return digests[0]
	}
	return id
}
