package oci

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// DefaultAppArmorProfile confines containers that ask for the runtime's
// default (or name no profile) on a node with AppArmor on.
const DefaultAppArmorProfile = "ketch-default"

// appArmorProfileText is DefaultAppArmorProfile: everything a container
// usually does is allowed, and what would reach past its namespaces into
// the node's kernel settings, firmware and security modules is not.
const appArmorProfileText = `#include <tunables/global>

profile ketch-default flags=(attach_disconnected,mediate_deleted) {
  #include <abstractions/base>

  network,
  capability,
  file,
  umount,

  # Signals only from outside (the runtime) and between its own.
  signal (receive) peer=unconfined,
  signal (send,receive) peer=ketch-default,
  ptrace (trace,read,tracedby,readby) peer=ketch-default,

  # Mounting is the runtime's job, done before the profile applies.
  deny mount,

  # The node's kernel settings under /proc: files directly in it and the
  # sysctls outside the namespaced kernel.shm*, kernel.msg* and kernel.sem.
  deny @{PROC}/* w,
  deny @{PROC}/{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}/** w,
  deny @{PROC}/sys/[^k]** w,
  deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w,
  deny @{PROC}/sysrq-trigger rwklx,
  deny @{PROC}/kcore rwklx,

  # sysfs, but for cgroups, is read only; firmware and LSM state not at all.
  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
}
`

// appArmorProfilesFile lists the profiles the kernel has loaded.
const appArmorProfilesFile = "/sys/kernel/security/apparmor/profiles"

// LoadAppArmorProfile loads DefaultAppArmorProfile into the kernel where
// AppArmor runs and it is not there yet (apparmor_parser replaces it
// otherwise, so a new ketch's profile wins). Without AppArmor it does
// nothing.
func LoadAppArmorProfile() error {
	if !apparmorEnabled() {
		return nil
	}
	if loaded, err := os.ReadFile(appArmorProfilesFile); err == nil && bytes.Contains(loaded, []byte(DefaultAppArmorProfile+" (")) {
		return nil
	}
	return parseAppArmorProfile("-Kr")
}

// parseAppArmorProfile runs apparmor_parser on the profile with flags:
// -Kr loads (or replaces) it, -QK only checks it.
func parseAppArmorProfile(flags string) error {
	cmd := exec.Command("apparmor_parser", flags)
	cmd.Stdin = strings.NewReader(appArmorProfileText)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apparmor profile %s: apparmor_parser %s: %v: %s", DefaultAppArmorProfile, flags, err, out)
	}
	return nil
}
