package cri

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
)

// A container cannot leave its pod's user namespace or bring mappings of
// its own; that is refused before its image is looked up or any rootfs is
// made (no image or container EXPECT).
func TestCreateContainerRefusesOtherUserNamespace(t *testing.T) {
	own := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
		Uids: []*runtimeapi.IDMapping{idMap(0, 100000, 65536)}, Gids: []*runtimeapi.IDMapping{idMap(0, 100000, 65536)}}
	other := []*runtimeapi.IDMapping{idMap(0, 200000, 65536)}
	for _, tc := range []struct {
		desc     string
		pod, ctr *runtimeapi.UserNamespace
	}{
		{"the node's in a pod with its own", own, &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}},
		{"other mappings", own, &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: other, Gids: other}},
		{"a container's own", own, &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}},
		{"the pod's in a pod on the node's", nil, own},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := newTestDeps(t, Config{UserNamespaces: true})
			blockWait(d.sandboxes)
			podCfg := testPodConfig("p")
			if tc.pod != nil {
				podCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
					NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: tc.pod}}
			}
			pod := runTestPod(t, d, podCfg)
			cfg := &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: "c"},
				Image:    &runtimeapi.ImageSpec{Image: "busybox"},
				Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: tc.ctr}}},
			}
			_, err := intercept(t, d.srv.CreateContainer, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("got %v, want InvalidArgument", err)
			}
			if ctrs, _ := d.store.ListContainers(store.ContainerFilter{}); len(ctrs) != 0 {
				t.Errorf("a refused container left records: %v", ctrs)
			}
		})
	}
}
