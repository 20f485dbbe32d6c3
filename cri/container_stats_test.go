package cri

import (
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.uber.org/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/oci/shim"
)

// TestContainerUsageRead: a container whose record says where its cgroup
// is has its figures read there, its shim not asked; an older record's
// come from its shim; a cgroup gone meanwhile is NotFound.
func TestContainerUsageRead(t *testing.T) {
	for _, tc := range []struct {
		desc, cgroupsPath string
		read              error // what reading the cgroup answers
		shim              bool  // whether the shim is asked
		code              codes.Code
	}{
		{desc: "read in ketchd", cgroupsPath: "/kubepods/pod1/c1"},
		{desc: "cgroup gone", cgroupsPath: "/kubepods/pod1/c1", read: errdefs.ErrNotFound, code: codes.NotFound},
		{desc: "record without the path", shim: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{})
			pod, id := createdContainer(t, d)
			if _, err := d.store.UpdateContainer(id, func(c *store.Container) error {
				c.State, c.PID, c.CgroupsPath = store.ContainerRunning, 99, tc.cgroupsPath
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			want, err := oci.CgroupPaths(tc.cgroupsPath)
			if err != nil && !tc.shim {
				t.Fatal(err)
			}
			read := false
			was := readCgroup
			t.Cleanup(func() { readCgroup = was })
			readCgroup = func(paths map[string]string) (shim.Stats, error) {
				read = true
				if len(paths) != len(want) || paths["memory"] != want["memory"] || paths[""] != want[""] {
					t.Errorf("read the cgroup at %v, want %v", paths, want)
				}
				return shim.Stats{At: time.Now(), Cgroup: testCgroup()}, tc.read
			}
			if tc.shim {
				d.shimOf(pod).EXPECT().Stats(gomock.Any(), id, shim.StatsOptions{}).Return(shim.Stats{At: time.Now(), Cgroup: testCgroup()}, nil)
			}
			if tc.code == codes.OK {
				d.images.EXPECT().WritableUsage(gomock.Any(), id).Return(uint64(4096), uint64(2), nil)
			}
			resp, err := intercept(t, d.srv.ContainerStats, &runtimeapi.ContainerStatsRequest{ContainerId: id})
			if status.Code(err) != tc.code || read == tc.shim {
				t.Fatalf("ContainerStats = %v, %v (cgroup read %v), want %v", resp, err, read, tc.code)
			}
			if err == nil && resp.Stats.GetMemory().GetWorkingSetBytes().GetValue() == 0 {
				t.Errorf("stats = %v", resp.Stats)
			}
		})
	}
}
