package oci

import (
	"os/exec"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestAppArmorProfileSelection: which profile a container runs under, on
// a node with and without AppArmor.
func TestAppArmorProfileSelection(t *testing.T) {
	defer func(f func() bool) { apparmorEnabled = f }(apparmorEnabled)
	local := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "localhost/mine"}
	for _, tc := range []struct {
		desc    string
		enabled bool
		sc      *runtimeapi.LinuxContainerSecurityContext
		want    string
		wantErr func(error) bool
	}{
		{desc: "unset, AppArmor on", enabled: true, sc: &runtimeapi.LinuxContainerSecurityContext{}, want: DefaultAppArmorProfile},
		{desc: "RuntimeDefault, AppArmor on", enabled: true, sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{}}, want: DefaultAppArmorProfile},
		//lint:ignore SA1019 clients older than the SecurityProfile field still send only the name.
		{desc: "legacy runtime/default", enabled: true, sc: &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "runtime/default"}, want: DefaultAppArmorProfile},
		{desc: "privileged gets none", enabled: true, sc: &runtimeapi.LinuxContainerSecurityContext{Privileged: true}, want: ""},
		{desc: "unconfined", enabled: true, sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}}, want: ""},
		{desc: "localhost", enabled: true, sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: local}, want: "mine"},
		{desc: "localhost applies to privileged too", enabled: true, sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: local, Privileged: true}, want: "mine"},
		{desc: "unset, AppArmor off", enabled: false, sc: &runtimeapi.LinuxContainerSecurityContext{}, want: ""},
		{desc: "localhost, AppArmor off", enabled: false, sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: local}, wantErr: errdefs.IsFailedPrecondition},
	} {
		apparmorEnabled = func() bool { return tc.enabled }
		got, err := apparmorProfile(tc.sc)
		if tc.wantErr != nil {
			if !tc.wantErr(err) {
				t.Errorf("%s: %q, %v", tc.desc, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.desc, got, err, tc.want)
		}
	}
}

// TestAppArmorProfileParses: apparmor_parser takes ketch's profile (it is
// only checked here, not loaded: this host runs no AppArmor).
func TestAppArmorProfileParses(t *testing.T) {
	if _, err := exec.LookPath("apparmor_parser"); err != nil {
		t.Skip("apparmor_parser is not installed (Debian package apparmor): the profile cannot be checked")
	}
	if err := parseAppArmorProfile("-QK"); err != nil {
		t.Error(err)
	}
}
