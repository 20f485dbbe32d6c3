package cri

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// PodSandboxStatus reports the pod as stored, with its readiness checked
// against the shim: a pod whose PID 1 just died is NOTREADY at once, not
// when the watcher has caught up.
func (s *Server) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	sb, err := s.findSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("pod sandbox status: %w", err)
	}
	if sb.State == store.SandboxReady {
		spec, err := storedSpec(sb)
		if err != nil {
			return nil, err
		}
		ready, err := s.sandboxes.Ready(ctx, spec)
		if err != nil {
			return nil, fmt.Errorf("pod sandbox status %s: %w", sb.ID, err)
		}
		if !ready {
			s.podDied(sb.ID)
			sb.State = store.SandboxNotReady
		}
	}
	st, cfg, err := sandboxStatus(sb)
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: st}
	if req.GetVerbose() {
		v := verboseSandbox{PID: sb.PID, NetNSPath: sb.NetNSPath, State: string(sb.State), Config: cfg}
		if sb.Resources != nil {
			v.Resources = &runtimeapi.LinuxContainerResources{}
			if err := proto.Unmarshal(sb.Resources, v.Resources); err != nil {
				return nil, fmt.Errorf("pod sandbox status %s: stored resources: %w: %w", sb.ID, errdefs.ErrDataLoss, err)
			}
		}
		info, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("pod sandbox status %s: encode info: %w", sb.ID, err)
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

// storedPodStatus is pod id's status as the store has it.
func (s *Server) storedPodStatus(id string) (*runtimeapi.PodSandboxStatus, error) {
	sb, err := s.store.GetSandbox(id)
	if err != nil {
		return nil, err
	}
	st, _, err := sandboxStatus(sb)
	return st, err
}

// sandboxStatus is the CRI status of a pod record, and its config.
func sandboxStatus(sb store.Sandbox) (*runtimeapi.PodSandboxStatus, *runtimeapi.PodSandboxConfig, error) {
	var cfg runtimeapi.PodSandboxConfig
	if err := proto.Unmarshal(sb.Config, &cfg); err != nil {
		return nil, nil, fmt.Errorf("pod %s: stored config: %w: %w", sb.ID, errdefs.ErrDataLoss, err)
	}
	st := &runtimeapi.PodSandboxStatus{
		Id:             sb.ID,
		Metadata:       cfg.GetMetadata(),
		State:          criSandboxState(sb.State),
		CreatedAt:      sb.CreatedAt.UnixNano(),
		Labels:         sb.Labels,
		Annotations:    sb.Annotations,
		RuntimeHandler: sb.RuntimeHandler,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{
			Options: namespaceOptions(&cfg),
		}},
	}
	if len(sb.IPs) > 0 {
		st.Network = &runtimeapi.PodSandboxNetworkStatus{Ip: sb.IPs[0]}
		for _, ip := range sb.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	return st, &cfg, nil
}

// verboseSandbox is the "info" of a verbose PodSandboxStatus; the keys are
// containerd's, so tools that read one read the other.
type verboseSandbox struct {
	PID       int                          `json:"pid"`
	NetNSPath string                       `json:"netNamespacePath"`
	State     string                       `json:"state"`
	Config    *runtimeapi.PodSandboxConfig `json:"config"`
	// Resources are what UpdatePodSandboxResources last set.
	Resources *runtimeapi.LinuxContainerResources `json:"resources,omitempty"`
}

// namespaceOptions are the pod's namespace modes, defaults filled in.
func namespaceOptions(cfg *runtimeapi.PodSandboxConfig) *runtimeapi.NamespaceOption {
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	return &runtimeapi.NamespaceOption{Network: ns.GetNetwork(), Pid: ns.GetPid(), Ipc: ns.GetIpc()}
}

// criSandboxState: a pod still being created is not ready yet.
func criSandboxState(st store.SandboxState) runtimeapi.PodSandboxState {
	if st == store.SandboxReady {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

// ListPodSandbox lists the pods the filter selects, from the store alone:
// the watchers keep each pod's readiness there. Pods still being created
// are left out until RunPodSandbox has answered.
func (s *Server) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	items, err := s.listPodSandbox(req.GetFilter())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListPodSandboxResponse{Items: items}
	return resp, checkListSize(resp, "ListPodSandbox", "StreamPodSandboxes", len(items))
}

func (s *Server) listPodSandbox(f *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	filter := store.SandboxFilter{ID: f.GetId(), LabelSelector: f.GetLabelSelector()}
	if st := f.GetState(); st != nil {
		want := store.SandboxNotReady
		if st.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			want = store.SandboxReady
		}
		filter.State = &want
	}
	pods, err := s.store.ListSandboxes(filter)
	if err != nil {
		return nil, fmt.Errorf("list pod sandboxes: %w", err)
	}
	var items []*runtimeapi.PodSandbox
	for _, sb := range pods {
		if sb.State == store.SandboxCreating {
			continue
		}
		items = append(items, &runtimeapi.PodSandbox{
			Id: sb.ID,
			Metadata: &runtimeapi.PodSandboxMetadata{
				Name: sb.Name, Namespace: sb.Namespace, Uid: sb.UID, Attempt: sb.Attempt,
			},
			State:          criSandboxState(sb.State),
			CreatedAt:      sb.CreatedAt.UnixNano(),
			Labels:         sb.Labels,
			Annotations:    sb.Annotations,
			RuntimeHandler: sb.RuntimeHandler,
		})
	}
	return items, nil
}
