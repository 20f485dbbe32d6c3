package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

const (
	bridgeList = `{"cniVersion":"1.0.0","name":"%s","plugins":[{"type":"bridge"},{"type":"loopback"}]}`
	singleConf = `{"cniVersion":"0.4.0","name":"single","type":"bridge","bridge":"br9"}`
)

// The network is the one kubelet would pick: the first loadable file by name.
func TestNetworkSelection(t *testing.T) {
	for _, tc := range []struct {
		desc        string
		files       map[string]string
		wantName    string
		wantPlugins []string
		wantErr     error
	}{
		{desc: "no directory", files: nil, wantErr: errdefs.ErrFailedPrecondition},
		{desc: "empty directory", files: map[string]string{}, wantErr: errdefs.ErrFailedPrecondition},
		{desc: "other extensions ignored", files: map[string]string{"10-a.conflist~": fmt.Sprintf(bridgeList, "a"), "README": "x"}, wantErr: errdefs.ErrFailedPrecondition},
		{
			desc:        "first by name",
			files:       map[string]string{"20-b.conflist": fmt.Sprintf(bridgeList, "b"), "10-a.conflist": fmt.Sprintf(bridgeList, "a")},
			wantName:    "a",
			wantPlugins: []string{"bridge", "loopback"},
		},
		{
			desc:        "broken files skipped",
			files:       map[string]string{"00-bad.conflist": "{", "05-empty.conflist": `{"cniVersion":"1.0.0","name":"e","plugins":[]}`, "10-a.conflist": fmt.Sprintf(bridgeList, "a")},
			wantName:    "a",
			wantPlugins: []string{"bridge", "loopback"},
		},
		{
			desc:        "single-plugin conf becomes a list of one",
			files:       map[string]string{"10-single.conf": singleConf, "20-b.conflist": fmt.Sprintf(bridgeList, "b")},
			wantName:    "single",
			wantPlugins: []string{"bridge"},
		},
		{desc: "only broken files", files: map[string]string{"00-bad.conf": `{"name":"x"}`}, wantErr: errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "net.d")
			if tc.files != nil {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for name, body := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c := Config{ConfDir: dir}
			list, err := c.network()
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || c.Ready() == nil {
					t.Fatalf("network() = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || c.Ready() != nil {
				t.Fatalf("network() = %v, Ready() = %v", err, c.Ready())
			}
			var types []string
			for _, p := range list.Plugins {
				types = append(types, p.Network.Type)
			}
			if list.Name != tc.wantName || !slices.Equal(types, tc.wantPlugins) {
				t.Errorf("network %q with %v, want %q with %v", list.Name, types, tc.wantName, tc.wantPlugins)
			}
		})
	}
}

// The directory is read on every call, so a config installed, replaced or
// removed while ketchd runs is seen at once.
func TestConfigChangesAreSeen(t *testing.T) {
	dir := t.TempDir()
	m := NewManager(Config{ConfDir: dir})
	if err := m.Status(t.Context()); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Status with no config = %v", err)
	}
	write := func(name, net string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf(bridgeList, net)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("20-b.conflist", "b")
	if err := m.Status(t.Context()); err != nil {
		t.Fatalf("Status after a config arrived = %v", err)
	}
	for _, step := range []struct {
		do   func()
		want string
	}{
		{func() { write("10-a.conflist", "a") }, "a"},
		{func() { write("10-a.conflist", "a2") }, "a2"},
		{func() { os.Remove(filepath.Join(dir, "10-a.conflist")) }, "b"},
	} {
		step.do()
		list, err := m.cfg.network()
		if err != nil || list.Name != step.want {
			t.Fatalf("network = %v, %v; want %s", list, err, step.want)
		}
	}
}

func TestRuntimeConf(t *testing.T) {
	rt := runtimeConf("abc", "/run/ketch/netns/abc", Pod{Namespace: "ns", Name: "n", UID: "u", PortMappings: []PortMapping{
		{Protocol: "UDP", ContainerPort: 53, HostPort: 5353, HostIP: "127.0.0.1"},
		{Protocol: "sctp", ContainerPort: 9, HostPort: 9},
		{ContainerPort: 80, HostPort: 8080},
		{Protocol: "TCP", ContainerPort: 443}, // not published
	}}, []string{"10.244.0.0/24", "fd00:10:244::/64"})
	wantArgs := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "ns"}, {"K8S_POD_NAME", "n"}, {"K8S_POD_INFRA_CONTAINER_ID", "abc"}, {"K8S_POD_UID", "u"}}
	if !slices.Equal(rt.Args, wantArgs) || rt.ContainerID != "abc" || rt.IfName != "eth0" || rt.NetNS != "/run/ketch/netns/abc" {
		t.Errorf("runtime conf = %+v", rt)
	}
	want := []portMapping{{5353, 53, "udp", "127.0.0.1"}, {9, 9, "sctp", ""}, {8080, 80, "tcp", ""}}
	if got := rt.CapabilityArgs["portMappings"]; !slices.Equal(got.([]portMapping), want) {
		t.Errorf("portMappings = %+v, want %+v", got, want)
	}
	wantRanges := [][]ipRange{{{"10.244.0.0/24"}}, {{"fd00:10:244::/64"}}}
	if got, _ := rt.CapabilityArgs["ipRanges"].([][]ipRange); !reflect.DeepEqual(got, wantRanges) {
		t.Errorf("ipRanges = %+v, want %+v", rt.CapabilityArgs["ipRanges"], wantRanges)
	}
	if rt := runtimeConf("abc", "", Pod{}, nil); len(rt.CapabilityArgs) != 0 {
		t.Errorf("capability args without mappings or CIDRs = %v, want none", rt.CapabilityArgs)
	}
}

// TestPodCIDRs: the CIDRs kubelet hands over are kept across restarts (a
// new Config over the same cache dir reads them) and bad ones refused.
func TestPodCIDRs(t *testing.T) {
	c := Config{CacheDir: t.TempDir()}
	if got, err := c.PodCIDRs(); err != nil || got != nil {
		t.Fatalf("before any: %v, %v", got, err)
	}
	if err := c.SetPodCIDRs([]string{"10.244.0.0/24", "fd00::/64"}); err != nil {
		t.Fatal(err)
	}
	if got, err := (Config{CacheDir: c.CacheDir}).PodCIDRs(); err != nil || !slices.Equal(got, []string{"10.244.0.0/24", "fd00::/64"}) {
		t.Errorf("read back %v, %v", got, err)
	}
	if err := c.SetPodCIDRs([]string{"10.244.0.0/33"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a bad CIDR: %v, want InvalidArgument", err)
	}
	if err := c.SetPodCIDRs(nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.PodCIDRs(); len(got) != 0 {
		t.Errorf("after clearing: %v", got)
	}
}

func TestPodIPs(t *testing.T) {
	idx := func(i int) *int { return &i }
	cidr := func(s string) net.IPNet {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return *n
	}
	res := &types100.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*types100.Interface{{Name: "cni0"}, {Name: "veth1"}, {Name: "eth0", Sandbox: "/run/ketch/netns/p"}},
		IPs: []*types100.IPConfig{
			{Interface: idx(0), Address: cidr("10.1.0.1/24")}, // the bridge's gateway address
			{Interface: idx(2), Address: cidr("fd00::5/64")},
			{Interface: idx(2), Address: cidr("10.1.0.5/24")},
			{Address: cidr("10.2.0.5/24")}, // no interface named: the pod's
		},
	}
	addrs, err := podAddrs(res)
	if err != nil {
		t.Fatal(err)
	}
	got := ipv4First(addrs)
	want := []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("10.2.0.5"), netip.MustParseAddr("fd00::5")}
	if !slices.Equal(got, want) {
		t.Errorf("pod IPs = %v, want %v", got, want)
	}
}
