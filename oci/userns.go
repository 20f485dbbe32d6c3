package oci

import (
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodUserNamespace checks the user namespace options of pod and returns
// the mappings of its own user namespace (kubelet's hostUsers: false), or
// nil ones when the pod shares the node's. Anything else is
// InvalidArgument:
//   - mode POD with other than one uid and one gid mapping, as kubelet
//     sends them: the rootfs is mounted idmapped by a single mapping;
//   - a mapping that does not map container ID 0, is empty or runs past
//     the last ID, or maps to the node's root, which would make the pod's
//     root the node's;
//   - mode POD with the node's PID or IPC namespace: the kernel lets a user
//     namespace mount /proc and mqueue only for namespaces it owns;
//   - mode NODE with mappings; modes CONTAINER and TARGET, which the CRI
//     defines for other namespaces.
func PodUserNamespace(pod *runtimeapi.PodSandboxConfig) (uids, gids []specs.LinuxIDMapping, err error) {
	ns := pod.GetLinux().GetSecurityContext().GetNamespaceOptions()
	u := ns.GetUsernsOptions()
	if u == nil {
		// Not NamespaceMode(0), which is POD: a kubelet that says nothing
		// runs pods as it always has.
		return nil, nil, nil
	}
	if u.GetMode() == runtimeapi.NamespaceMode_POD && (ns.GetPid() == runtimeapi.NamespaceMode_NODE || ns.GetIpc() == runtimeapi.NamespaceMode_NODE) {
		return nil, nil, fmt.Errorf("user namespace of the pod's own with the node's PID or IPC namespace: %w", errdefs.ErrInvalidArgument)
	}
	return idMappings(u)
}

// idMappings checks user namespace options on their own.
func idMappings(u *runtimeapi.UserNamespace) (uids, gids []specs.LinuxIDMapping, err error) {
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		if len(u.GetUids()) > 0 || len(u.GetGids()) > 0 {
			return nil, nil, fmt.Errorf("user namespace mode NODE with uid or gid mappings: %w", errdefs.ErrInvalidArgument)
		}
		return nil, nil, nil
	case runtimeapi.NamespaceMode_POD:
	default:
		return nil, nil, fmt.Errorf("user namespace mode %s: pods have POD or NODE: %w", u.GetMode(), errdefs.ErrInvalidArgument)
	}
	if uids, err = podIDMapping("uid", u.GetUids()); err != nil {
		return nil, nil, err
	}
	if gids, err = podIDMapping("gid", u.GetGids()); err != nil {
		return nil, nil, err
	}
	return uids, gids, nil
}

func podIDMapping(what string, m []*runtimeapi.IDMapping) ([]specs.LinuxIDMapping, error) {
	if len(m) != 1 || m[0] == nil {
		return nil, fmt.Errorf("user namespace needs exactly one %s mapping, got %d: %w", what, len(m), errdefs.ErrInvalidArgument)
	}
	e := m[0]
	switch {
	case e.GetContainerId() != 0:
		return nil, fmt.Errorf("%s mapping %d:%d:%d does not map container ID 0: %w",
			what, e.GetContainerId(), e.GetHostId(), e.GetLength(), errdefs.ErrInvalidArgument)
	case e.GetLength() == 0 || uint64(e.GetHostId())+uint64(e.GetLength()) > 1<<32-1:
		// 2^32-1 is no ID: it is (uid_t)-1, "unchanged" to the kernel.
		return nil, fmt.Errorf("%s mapping to host IDs %d+%d: empty or past the last ID: %w",
			what, e.GetHostId(), e.GetLength(), errdefs.ErrInvalidArgument)
	case e.GetHostId() == 0:
		return nil, fmt.Errorf("%s mapping maps the pod's root to the node's: %w", what, errdefs.ErrInvalidArgument)
	}
	return []specs.LinuxIDMapping{{ContainerID: 0, HostID: e.GetHostId(), Size: e.GetLength()}}, nil
}

// UserNamespace returns the mappings of the user namespace container cfg
// of pod runs in: the pod's own, or nil ones for the node's. A container
// cannot have one of its own nor leave its pod's: its options must say
// what the pod's say, or nothing (kubelet repeats the pod's; crictl
// configs often carry none). A container of a pod with a user namespace
// cannot have the node's PID or IPC namespace either. InvalidArgument
// otherwise.
func UserNamespace(cfg *runtimeapi.ContainerConfig, pod *runtimeapi.PodSandboxConfig) (uids, gids []specs.LinuxIDMapping, err error) {
	uids, gids, err = PodUserNamespace(pod)
	if err != nil {
		return nil, nil, fmt.Errorf("pod: %w", err)
	}
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if c := ns.GetUsernsOptions(); c != nil {
		podMode := runtimeapi.NamespaceMode_NODE
		if uids != nil {
			podMode = runtimeapi.NamespaceMode_POD
		}
		if c.GetMode() != podMode {
			return nil, nil, fmt.Errorf("container asks for user namespace mode %s, its pod has %s: %w", c.GetMode(), podMode, errdefs.ErrInvalidArgument)
		}
		if len(c.GetUids()) > 0 || len(c.GetGids()) > 0 {
			cu, cg, err := idMappings(c)
			if err != nil || !slices.Equal(cu, uids) || !slices.Equal(cg, gids) {
				return nil, nil, fmt.Errorf("container's user namespace mappings are not its pod's: %w", errdefs.ErrInvalidArgument)
			}
		}
	}
	if uids != nil && (ns.GetPid() == runtimeapi.NamespaceMode_NODE || ns.GetIpc() == runtimeapi.NamespaceMode_NODE) {
		return nil, nil, fmt.Errorf("the node's PID or IPC namespace in a pod with a user namespace: %w", errdefs.ErrInvalidArgument)
	}
	return uids, gids, nil
}
