package oci

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/pkg/cap"
	"github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// defaultCapabilities is containerd's (and Docker's) default set, which
// images and Kubernetes' pod security levels are written against.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// ownCapabilities is what "ALL" and privileged mean, as in containerd: the
// capabilities this process holds, which are all it can hand on, and all
// the running kernel knows when it runs as root.
var ownCapabilities = sync.OnceValues(cap.Current)

// capabilities returns the process's capability sets; never nil, because
// libcontainer gives a nil set the host root's full capabilities.
//
// add_capabilities go into bounding, effective and permitted only. The CRI
// comment also names inheritable, but containerd (after CVE-2022-24769)
// leaves inheritable empty so that file capabilities cannot reach past the
// bounding set, and so does ketch. add_ambient_capabilities are where CRI
// and containerd part: containerd 2.4 clears ambient capabilities
// altogether; ketch follows CRI and puts them in every set, since the
// kernel raises an ambient capability only when it is both permitted and
// inheritable.
func capabilities(sc *runtimeapi.LinuxContainerSecurityContext) (*specs.LinuxCapabilities, error) {
	if sc.GetPrivileged() {
		all, err := ownCapabilities()
		if err != nil {
			return nil, fmt.Errorf("capabilities of ketch: %w", err)
		}
		return &specs.LinuxCapabilities{Bounding: slices.Clone(all), Effective: slices.Clone(all), Permitted: slices.Clone(all)}, nil
	}
	c := sc.GetCapabilities()
	set := slices.Clone(defaultCapabilities)
	// "ALL" sets the base before single names apply, so that add ALL with
	// drop CHOWN is everything but CHOWN, and drop ALL with add CHOWN only
	// CHOWN.
	if hasAll(c.GetAddCapabilities()) {
		all, err := ownCapabilities()
		if err != nil {
			return nil, fmt.Errorf("capabilities of ketch: %w", err)
		}
		set = slices.Clone(all)
	}
	if hasAll(c.GetDropCapabilities()) {
		set = []string{}
	}
	ambient := union([]string{}, capNames(c.GetAddAmbientCapabilities()))
	set = union(set, capNames(c.GetAddCapabilities()), ambient)
	drop := capNames(c.GetDropCapabilities())
	set, ambient = without(set, drop), without(ambient, drop)
	return &specs.LinuxCapabilities{
		Bounding:    set,
		Effective:   slices.Clone(set),
		Permitted:   slices.Clone(set),
		Inheritable: ambient,
		Ambient:     slices.Clone(ambient),
	}, nil
}

func hasAll(names []string) bool {
	return slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, "ALL") })
}

// capNames spells CRI's names ("NET_ADMIN", or "CAP_NET_ADMIN" from some
// clients) as the runtime-spec does. Names the kernel does not know pass
// through: runc skips them with a warning, as it does for containerd, and
// refusing them would break pods that run elsewhere.
func capNames(names []string) []string {
	out := []string{}
	for _, n := range names {
		if strings.EqualFold(n, "ALL") {
			continue
		}
		out = append(out, "CAP_"+strings.TrimPrefix(strings.ToUpper(n), "CAP_"))
	}
	return out
}

func union(set []string, more ...[]string) []string {
	for _, m := range more {
		for _, c := range m {
			if !slices.Contains(set, c) {
				set = append(set, c)
			}
		}
	}
	return set
}

func without(set, drop []string) []string {
	return slices.DeleteFunc(set, func(c string) bool { return slices.Contains(drop, c) })
}
