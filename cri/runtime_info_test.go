package cri

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"ketch.dev/ketch/oci"
)

func TestVersion(t *testing.T) {
	srv, _, _ := newTestServer(t, Config{Version: "1.2.3-test"})
	resp, err := srv.Version(t.Context(), &runtimeapi.VersionRequest{Version: "0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.RuntimeName != "ketch" || resp.RuntimeApiVersion != "v1" || resp.RuntimeVersion != "1.2.3-test" {
		t.Errorf("got name %q api %q version %q, want ketch v1 1.2.3-test",
			resp.RuntimeName, resp.RuntimeApiVersion, resp.RuntimeVersion)
	}
}

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		desc        string
		networkErr  error
		wantNetwork bool
		wantReason  string
		wantMessage string
	}{
		{desc: "network ready", networkErr: nil, wantNetwork: true},
		{
			desc:        "no CNI config",
			networkErr:  errors.New("no network config found in /etc/cni/net.d"),
			wantReason:  "NetworkPluginNotReady",
			wantMessage: "no network config found in /etc/cni/net.d",
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			srv, _, network := newTestServer(t, Config{RecursiveReadOnlyMounts: true, UserNamespaces: true})
			network.EXPECT().Ready().Return(tc.networkErr)
			resp, err := srv.Status(t.Context(), &runtimeapi.StatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			conds := map[string]*runtimeapi.RuntimeCondition{}
			for _, c := range resp.GetStatus().GetConditions() {
				conds[c.Type] = c
			}
			if rt := conds[runtimeapi.RuntimeReady]; !rt.GetStatus() {
				t.Errorf("RuntimeReady = %v, want true", rt)
			}
			net := conds[runtimeapi.NetworkReady]
			if net == nil {
				t.Fatalf("no NetworkReady condition in %v", resp.GetStatus().GetConditions())
			}
			if net.Status != tc.wantNetwork || net.Reason != tc.wantReason || net.Message != tc.wantMessage {
				t.Errorf("NetworkReady = {%v %q %q}, want {%v %q %q}",
					net.Status, net.Reason, net.Message, tc.wantNetwork, tc.wantReason, tc.wantMessage)
			}
			if f := resp.GetFeatures(); !f.GetSupplementalGroupsPolicy() || !f.GetMountOptions() || !f.GetUserNamespacesHostNetwork() {
				t.Errorf("runtime features %v, want supplemental groups policy, mount options and user namespaces with host network", f)
			}
			if h := resp.GetRuntimeHandlers(); len(h) != 1 || h[0].Name != "" || !h[0].GetFeatures().GetRecursiveReadOnlyMounts() {
				t.Errorf("runtime handlers = %v, want the default one with recursive read-only mounts", h)
			}
		})
	}
}

func TestRuntimeConfig(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		config oci.CgroupDriver
		driver runtimeapi.CgroupDriver
	}{
		{"systemd", oci.CgroupDriverSystemd, runtimeapi.CgroupDriver_SYSTEMD},
		{"cgroupfs", oci.CgroupDriverCgroupfs, runtimeapi.CgroupDriver_CGROUPFS},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			srv, _, _ := newTestServer(t, Config{CgroupDriver: tc.config})
			resp, err := srv.RuntimeConfig(t.Context(), &runtimeapi.RuntimeConfigRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetLinux().GetCgroupDriver(); got != tc.driver {
				t.Errorf("cgroup driver = %s, want %s", got, tc.driver)
			}
		})
	}
}

// TestUpdateRuntimeConfig: kubelet's comma-separated pod CIDRs reach the
// network as a list; a refusal keeps its code.
func TestUpdateRuntimeConfig(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		podCIDR string
		want    []string
		err     error
		code    codes.Code
	}{
		{desc: "one", podCIDR: "10.244.0.0/24", want: []string{"10.244.0.0/24"}},
		{desc: "dual stack", podCIDR: "10.244.0.0/24, fd00::/64", want: []string{"10.244.0.0/24", "fd00::/64"}},
		{desc: "none", podCIDR: "", want: nil},
		{desc: "refused", podCIDR: "nonsense", want: []string{"nonsense"}, err: errdefs.ErrInvalidArgument, code: codes.InvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			srv, _, network := newTestServer(t, Config{})
			network.EXPECT().SetPodCIDRs(tc.want).Return(tc.err)
			_, err := intercept(t, srv.UpdateRuntimeConfig, &runtimeapi.UpdateRuntimeConfigRequest{
				RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: tc.podCIDR}},
			})
			if status.Code(err) != tc.code {
				t.Errorf("got %v, want %v", err, tc.code)
			}
		})
	}
}

// TestStatusKernelFeatures: what the kernel lacks is not advertised.
func TestStatusKernelFeatures(t *testing.T) {
	srv, _, network := newTestServer(t, Config{})
	network.EXPECT().Ready().Return(nil)
	resp, err := srv.Status(t.Context(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if h := resp.GetRuntimeHandlers()[0].GetFeatures(); h.GetRecursiveReadOnlyMounts() || h.GetUserNamespaces() || resp.GetFeatures().GetUserNamespacesHostNetwork() {
		t.Errorf("features %v / %v advertised on a kernel without them", h, resp.GetFeatures())
	}
}
