package cni

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRuntimeConf: whatever a pod is called and maps, the plugins get each
// name as one argument, exactly as given (libcni joins them into CNI_ARGS;
// splitting or trimming here would hand a plugin another pod's name), and
// capability args they can decode.
func FuzzRuntimeConf(f *testing.F) {
	// podID, namespace, name, uid, protocol, containerPort, hostPort, hostIP, CIDRs (comma-separated)
	f.Add(strings.Repeat("a", 64), "default", "web-0", "0b4f1a6e-1d2c-4c4b-9e1f-2a8c3d4e5f60", "TCP", int32(80), int32(8080), "", "10.244.0.0/24")
	f.Add(strings.Repeat("b", 64), "kube-system", "coredns-5d78c9869d-x2x7q", "5f2e3b9c", "UDP", int32(53), int32(0), "", "10.244.0.0/24,fd00:10:244::/64")
	f.Add("abc", "cri-test-namespace", "portforward-sandbox", "a1b2", "sctp", int32(9), int32(9), "127.0.0.1", "")
	f.Add("id;IgnoreUnknown=0", "ns=x", "web;K8S_POD_NAME=evil", "u\nv", "", int32(-1), int32(70000), "::1", "not-a-cidr")
	f.Fuzz(func(t *testing.T, podID, namespace, name, uid, proto string, containerPort, hostPort int32, hostIP, cidrs string) {
		var podCIDRs []string
		if cidrs != "" {
			podCIDRs = strings.Split(cidrs, ",")
		}
		pod := Pod{Namespace: namespace, Name: name, UID: uid, PortMappings: []PortMapping{
			{Protocol: proto, ContainerPort: containerPort, HostPort: hostPort, HostIP: hostIP},
		}}
		rt := runtimeConf(podID, "/run/ketch/netns/"+podID, pod, podCIDRs)

		want := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", namespace}, {"K8S_POD_NAME", name},
			{"K8S_POD_INFRA_CONTAINER_ID", podID}, {"K8S_POD_UID", uid}}
		if !slices.Equal(rt.Args, want) {
			t.Fatalf("args %q, want %q", rt.Args, want)
		}
		if rt.ContainerID != podID || rt.IfName != ifName {
			t.Fatalf("container ID %q, interface %q", rt.ContainerID, rt.IfName)
		}

		raw, err := json.Marshal(rt.CapabilityArgs)
		if err != nil {
			t.Fatalf("capability args %v: %v", rt.CapabilityArgs, err)
		}
		var got struct {
			PortMappings []portMapping `json:"portMappings"`
			IPRanges     [][]ipRange   `json:"ipRanges"`
		}
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatalf("capability args %s do not decode: %v", raw, err)
		}
		// Only published ports (a host port) reach portmap, in lower case,
		// TCP when unnamed.
		var wantPorts []portMapping
		if hostPort > 0 {
			p := strings.ToLower(proto)
			if p == "" {
				p = "tcp"
			}
			wantPorts = []portMapping{{hostPort, containerPort, p, hostIP}}
		}
		var wantRanges [][]ipRange
		for _, c := range podCIDRs {
			wantRanges = append(wantRanges, []ipRange{{Subnet: c}})
		}
		if len(got.PortMappings) != len(wantPorts) || len(got.IPRanges) != len(wantRanges) {
			t.Fatalf("capability args %s, want port mappings %v and ranges %v", raw, wantPorts, wantRanges)
		}
		// JSON replaces invalid UTF-8, so only valid strings come back as
		// they went in.
		if utf8.ValidString(proto) && utf8.ValidString(hostIP) && utf8.ValidString(cidrs) && (!slices.Equal(got.PortMappings, wantPorts) ||
			!slices.EqualFunc(got.IPRanges, wantRanges, slices.Equal[[]ipRange])) {
			t.Fatalf("capability args %s, want port mappings %v and ranges %v", raw, wantPorts, wantRanges)
		}
	})
}
