package helper

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer/configs"
)

// A shim killed half-way through a start leaves cgroups that libcontainer,
// which saves its state only once the container has started, knows
// nothing of: Destroy finds them from the config saved at create, removes
// them and the state dir, and a second destroy finds nothing to do.
func TestDestroyUnstarted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes cgroups")
	}
	dir, id := t.TempDir(), "c1"
	parent := fmt.Sprintf("/ketch-shimtest-%d", os.Getpid())
	cg := &cgroups.Cgroup{Path: parent + "/" + id, Resources: &cgroups.Resources{}}
	root := filepath.Join(dir, "state")
	if err := os.MkdirAll(filepath.Join(root, id), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := saveConfig(root, id, &configs.Config{Cgroups: cg}); err != nil {
		t.Fatal(err)
	}
	cm, err := manager.New(cg)
	if err != nil {
		t.Fatal(err)
	}
	if err := cm.Apply(-1); err != nil { // the cgroups, with no process
		t.Fatal(err)
	}
	paths := cm.GetPaths()
	t.Cleanup(func() {
		for _, p := range paths {
			_ = os.Remove(p)
			_ = os.Remove(filepath.Dir(p))
		}
	})
	if len(paths) == 0 {
		t.Fatal("the cgroup manager made no cgroup")
	}
	for range 2 {
		if err := destroy(root, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cgroup %s is left", p)
		}
	}
	if _, err := os.Stat(filepath.Join(root, id)); err == nil {
		t.Error("the state dir is left")
	}
}
