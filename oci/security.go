package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runc/libcontainer/apparmor"
	"github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The deprecated string form of a security profile, as kubelet once sent it.
const (
	profileRuntimeDefault = "runtime/default"
	profileDockerDefault  = "docker/default"
	profileUnconfined     = "unconfined"
	profileLocalhost      = "localhost/"
)

// seccompProfile returns the container's seccomp filter; nil is none.
// Nothing asked for is none too: kubelet sends RuntimeDefault whenever a
// pod or the node (--seccomp-default) wants one, and critest expects an
// unset profile to leave seccomp off. A privileged container has none,
// whatever it asked for.
func seccompProfile(in Input, s *specs.Spec) (*specs.LinuxSeccomp, error) {
	sc := securityContext(in)
	if sc.GetPrivileged() {
		return nil, nil
	}
	sp := sc.GetSeccomp()
	if sp == nil {
		var err error
		//lint:ignore SA1019 clients older than the SecurityProfile field still send only the path.
		if sp, err = profileFromPath("seccomp_profile_path", sc.GetSeccompProfilePath()); err != nil {
			return nil, err
		}
	}
	if sp == nil {
		return nil, nil
	}
	if sp.GetProfileType() != runtimeapi.SecurityProfile_Localhost && sp.GetLocalhostRef() != "" {
		return nil, fmt.Errorf("seccomp: localhost_ref is set for profile type %s: %w", sp.GetProfileType(), errdefs.ErrInvalidArgument)
	}
	switch sp.GetProfileType() {
	case runtimeapi.SecurityProfile_Unconfined:
		return nil, nil
	case runtimeapi.SecurityProfile_RuntimeDefault:
		return seccomp.DefaultProfile(s), nil
	case runtimeapi.SecurityProfile_Localhost:
		return localhostSeccomp(sp.GetLocalhostRef(), in.SeccompProfileRoot)
	}
	return nil, fmt.Errorf("seccomp: profile type %d: %w", sp.GetProfileType(), errdefs.ErrInvalidArgument)
}

// profileFromPath reads the deprecated string form; "" is nil.
func profileFromPath(field, p string) (*runtimeapi.SecurityProfile, error) {
	switch {
	case p == "":
		return nil, nil
	case p == profileRuntimeDefault || p == profileDockerDefault:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, nil
	case p == profileUnconfined:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}, nil
	case strings.HasPrefix(p, profileLocalhost):
		return &runtimeapi.SecurityProfile{
			ProfileType:  runtimeapi.SecurityProfile_Localhost,
			LocalhostRef: strings.TrimPrefix(p, profileLocalhost),
		}, nil
	}
	return nil, fmt.Errorf("%s %q: want %s, %s, %s or %s<path>: %w",
		field, p, profileRuntimeDefault, profileDockerDefault, profileUnconfined, profileLocalhost, errdefs.ErrInvalidArgument)
}

// localhostSeccomp loads a profile from the node. kubelet sends absolute
// paths; a relative one is taken from root.
func localhostSeccomp(ref, root string) (*specs.LinuxSeccomp, error) {
	// Old clients kept the prefix in the reference as well.
	ref = strings.TrimPrefix(ref, profileLocalhost)
	if ref == "" {
		return nil, fmt.Errorf("seccomp: localhost profile without a path: %w", errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(ref) {
		if root == "" {
			return nil, fmt.Errorf("seccomp: localhost profile %q is relative and no profile root is set: %w", ref, errdefs.ErrInvalidArgument)
		}
		ref = filepath.Join(root, ref)
	}
	data, err := os.ReadFile(ref)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("seccomp: localhost profile %s does not exist: %w", ref, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("seccomp: localhost profile: %w", err)
	}
	var profile specs.LinuxSeccomp
	if err := json.Unmarshal(data, &profile); err != nil {
		return nil, fmt.Errorf("seccomp: localhost profile %s: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	return &profile, nil
}

// apparmorEnabled is whether the node runs AppArmor (a variable for tests).
var apparmorEnabled = apparmor.IsEnabled

// apparmorProfile returns the AppArmor profile the process runs under; ""
// is none. As containerd and CRI-O do, a container that names no profile or
// RuntimeDefault runs under the runtime's own, DefaultAppArmorProfile,
// unless it is privileged; without AppArmor on the node only a named
// (localhost) profile is refused, as it would otherwise silently not
// confine.
func apparmorProfile(sc *runtimeapi.LinuxContainerSecurityContext) (string, error) {
	sp := sc.GetApparmor()
	if sp == nil {
		var err error
		//lint:ignore SA1019 clients older than the SecurityProfile field still send only the name.
		if sp, err = profileFromPath("apparmor_profile", sc.GetApparmorProfile()); err != nil {
			return "", err
		}
	}
	switch sp.GetProfileType() {
	case runtimeapi.SecurityProfile_Unconfined:
		return "", nil
	case runtimeapi.SecurityProfile_RuntimeDefault:
		if sc.GetPrivileged() || !apparmorEnabled() {
			return "", nil
		}
		return DefaultAppArmorProfile, nil
	}
	name := strings.TrimPrefix(sp.GetLocalhostRef(), profileLocalhost)
	switch {
	case name == "":
		return "", fmt.Errorf("apparmor: localhost profile without a name: %w", errdefs.ErrInvalidArgument)
	case !apparmorEnabled():
		return "", fmt.Errorf("apparmor profile %q: AppArmor is not enabled on this node: %w", name, errdefs.ErrFailedPrecondition)
	}
	return name, nil
}
