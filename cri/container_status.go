package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci/shim"
)

// ContainerStatus reports the container as recorded; the watchers keep
// the record true.
func (s *Server) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c, err := s.findContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("container status: %w", err)
	}
	st, cfg, err := containerStatus(c)
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if req.GetVerbose() {
		v := verboseContainer{SandboxID: c.SandboxID, PID: c.PID, State: string(c.State), Config: cfg, RuntimeSpec: c.Spec}
		if c.WantResult && c.State == store.ContainerExited {
			v.Result, v.ResultTruncated = &c.Result, c.ResultTruncated
		}
		info, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

// containerStatus is c's CRI status, and the config it was created with.
func containerStatus(c store.Container) (*runtimeapi.ContainerStatus, *runtimeapi.ContainerConfig, error) {
	var cfg runtimeapi.ContainerConfig
	if err := proto.Unmarshal(c.Config, &cfg); err != nil {
		return nil, nil, fmt.Errorf("container %s: stored config: %w: %w", c.ID, errdefs.ErrDataLoss, err)
	}
	st := &runtimeapi.ContainerStatus{
		Id:          c.ID,
		Metadata:    &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
		State:       criContainerState(c.State),
		CreatedAt:   c.CreatedAt.UnixNano(),
		StartedAt:   unixNano(c.StartedAt),
		FinishedAt:  unixNano(c.FinishedAt),
		ExitCode:    c.ExitCode,
		Image:       &runtimeapi.ImageSpec{Image: c.Image, Annotations: cfg.GetImage().GetAnnotations()},
		ImageRef:    c.ImageRef,
		ImageId:     c.ImageID,
		Reason:      c.Reason,
		Message:     c.Message,
		Labels:      c.Labels,
		Annotations: c.Annotations,
		Mounts:      cfg.GetMounts(),
		LogPath:     c.LogPath,
		StopSignal:  criSignal(c.StopSignal),
	}
	if r := cfg.GetLinux().GetResources(); r != nil {
		st.Resources = &runtimeapi.ContainerResources{Linux: r}
	}
	if u := c.User; u != nil {
		groups := make([]int64, len(u.Groups))
		for i, g := range u.Groups {
			groups[i] = int64(g)
		}
		st.User = &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{Uid: int64(u.UID), Gid: int64(u.GID), SupplementalGroups: groups}}
	}
	return st, &cfg, nil
}

// verboseContainer is the "info" of a verbose ContainerStatus, with
// containerd's keys.
type verboseContainer struct {
	SandboxID   string                      `json:"sandboxID"`
	PID         int                         `json:"pid"`
	State       string                      `json:"state"`
	Config      *runtimeapi.ContainerConfig `json:"config"`
	RuntimeSpec json.RawMessage             `json:"runtimeSpec,omitempty"`
	// The whole captured stdout, byte for byte (base64 in JSON), of an
	// exited container that asked for a result.
	Result          *[]byte `json:"result,omitempty"`
	ResultTruncated bool    `json:"resultTruncated,omitempty"`
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// criContainerState: a container still being created is reported as
// created (it is not listed until it is).
func criContainerState(st store.ContainerState) runtimeapi.ContainerState {
	switch st {
	case store.ContainerRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case store.ContainerExited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_CREATED
}

var fromCRIContainerState = map[runtimeapi.ContainerState]store.ContainerState{
	runtimeapi.ContainerState_CONTAINER_CREATED: store.ContainerCreated,
	runtimeapi.ContainerState_CONTAINER_RUNNING: store.ContainerRunning,
	runtimeapi.ContainerState_CONTAINER_EXITED:  store.ContainerExited,
}

// ListContainers lists the containers the filter selects. A state filter
// of UNKNOWN selects nothing: ketch records no container in that state.
func (s *Server) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := req.GetFilter()
	ctrs, err := s.selectContainers(f)
	if err != nil {
		return nil, err
	}
	all := f.GetId() == "" && f.GetPodSandboxId() == "" && f.GetState() == nil && len(f.GetLabelSelector()) == 0
	resp, err := s.listItems.response(ctrs, all)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return resp, checkListSize(resp, "ListContainers", "StreamContainers", len(ctrs))
}

// listContainers is what ListContainers lists, as items.
func (s *Server) listContainers(f *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	ctrs, err := s.selectContainers(f)
	items := make([]*runtimeapi.Container, len(ctrs))
	for i, c := range ctrs {
		items[i] = containerItem(c)
	}
	return items, err
}

// selectContainers is the records the filter selects, but for those still
// being created.
func (s *Server) selectContainers(f *runtimeapi.ContainerFilter) ([]*store.Container, error) {
	filter := store.ContainerFilter{ID: f.GetId(), SandboxID: f.GetPodSandboxId(), LabelSelector: f.GetLabelSelector()}
	if sv := f.GetState(); sv != nil {
		st, ok := fromCRIContainerState[sv.GetState()]
		if !ok {
			return nil, nil
		}
		filter.State = &st
	}
	ctrs, err := s.store.ListContainers(filter)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return slices.DeleteFunc(ctrs, func(c *store.Container) bool { return c.State == store.ContainerCreating }), nil
}

// containerState is what the shim of container c's pod says of it.
func (s *Server) containerState(ctx context.Context, c *store.Container) (shim.State, error) {
	sh, err := s.containers.Shim(ctx, c.SandboxID)
	if err != nil {
		return shim.State{}, err
	}
	return sh.State(ctx, c.ID)
}
