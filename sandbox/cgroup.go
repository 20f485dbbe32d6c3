package sandbox

import (
	"fmt"
	"os"
	"path"

	"github.com/containerd/errdefs"

	"ketch.dev/ketch/oci"
)

// cgroupParent is where the pod's own cgroup (its ketch-init's, where it
// has one) goes, beside its containers'.
func (m *Manager) cgroupParent(s Spec) string {
	if s.CgroupParent == "" && m.o.CgroupDriver != oci.CgroupDriverSystemd {
		return m.o.CgroupParent
	}
	return s.CgroupParent
}

// makeCgroupParent creates the cgroupfs parent of cgroupsPath in every
// hierarchy, as libcontainer would, so that one that cannot exist (a path
// through a file, say) fails here with its name rather than half-way
// through libcontainer's setup, whose own clean-up then fails as well.
// systemd makes its slices itself.
func makeCgroupParent(cgroupsPath string) error {
	if !path.IsAbs(cgroupsPath) || path.Dir(cgroupsPath) == "/" {
		return nil
	}
	paths, err := oci.CgroupPaths(cgroupsPath)
	if err != nil {
		return fmt.Errorf("find cgroup hierarchies: %w", err)
	}
	for _, p := range paths {
		if err := os.MkdirAll(path.Dir(p), 0o755); err != nil {
			return fmt.Errorf("cgroup parent %s cannot be created: %w: %w", path.Dir(cgroupsPath), errdefs.ErrFailedPrecondition, err)
		}
	}
	return nil
}
