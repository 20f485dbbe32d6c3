package cri

import (
	"encoding/json"
	"testing"

	"go.uber.org/mock/gomock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestUpdatePodSandboxResources: the pod's new resources are checked and
// show in verbose status, no container is touched (gomock fails any call);
// an unknown pod or a bad request is refused.
func TestUpdatePodSandboxResources(t *testing.T) {
	d := newTestDeps(t, Config{})
	blockWait(d.sandboxes)
	id := runTestPod(t, d, testPodConfig("resized"))
	d.containers.EXPECT().Paths(gomock.Any()).AnyTimes()

	for _, tc := range []struct {
		desc string
		req  *runtimeapi.UpdatePodSandboxResourcesRequest
		code codes.Code
	}{
		{"unknown pod", &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: "ffff", Resources: &runtimeapi.LinuxContainerResources{}}, codes.NotFound},
		{"no resources", &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: id}, codes.InvalidArgument},
		{"negative shares", &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: id, Resources: &runtimeapi.LinuxContainerResources{CpuShares: -1}}, codes.InvalidArgument},
	} {
		if _, err := intercept(t, d.srv.UpdatePodSandboxResources, tc.req); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.desc, err, tc.code)
		}
	}

	want := &runtimeapi.LinuxContainerResources{CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 256 << 20}
	if _, err := intercept(t, d.srv.UpdatePodSandboxResources, &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: id, Resources: want}); err != nil {
		t.Fatal(err)
	}
	d.sandboxes.EXPECT().Ready(gomock.Any(), podWithID(id)).Return(true, nil).AnyTimes()
	resp, err := intercept(t, d.srv.PodSandboxStatus, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Resources *runtimeapi.LinuxContainerResources `json:"resources"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.Resources.GetCpuQuota() != 50000 || info.Resources.GetMemoryLimitInBytes() != 256<<20 {
		t.Errorf("verbose resources %v (%v)", info.Resources, err)
	}
}
