package cri

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestStatusVerbose: verbose Status gives, under "config" as containerd
// does, where ketch keeps its state (critest probes idmapped mounts there)
// and the node's pod CIDRs; a network that cannot say fails the call with
// its code.
func TestStatusVerbose(t *testing.T) {
	srv, _, network := newTestServer(t, Config{RootDir: "/var/lib/ketch", StateDir: "/run/ketch", RuntimeHandlers: []string{"ketch", "gvisor"}})
	network.EXPECT().Ready().Return(nil).Times(2)
	network.EXPECT().PodCIDRs().Return([]string{"10.244.1.0/24", "fd00:1::/64"}, nil)
	resp, err := intercept(t, srv.Status, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		StateDir string   `json:"stateDir"`
		RootDir  string   `json:"rootDir"`
		PodCIDRs []string `json:"podCIDRs"`
	}
	if err := json.Unmarshal([]byte(resp.Info["config"]), &cfg); err != nil {
		t.Fatalf("info config %q: %v", resp.Info["config"], err)
	}
	if cfg.StateDir != "/run/ketch" || cfg.RootDir != "/var/lib/ketch" || !reflect.DeepEqual(cfg.PodCIDRs, []string{"10.244.1.0/24", "fd00:1::/64"}) {
		t.Errorf("info config %+v", cfg)
	}
	var names []string
	for _, h := range resp.RuntimeHandlers {
		names = append(names, h.Name)
	}
	if fmt.Sprint(names) != "[ ketch gvisor]" {
		t.Errorf("runtime handlers %q, want the default one and those configured", names)
	}

	network.EXPECT().PodCIDRs().Return(nil, fmt.Errorf("cni: %w", errdefs.ErrUnavailable))
	if _, err := intercept(t, srv.Status, &runtimeapi.StatusRequest{Verbose: true}); status.Code(err) != codes.Unavailable {
		t.Errorf("verbose status without pod CIDRs: %v, want Unavailable", err)
	}
}
