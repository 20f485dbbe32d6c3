package cri

import (
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCheckPodNames: what would break out of CNI_ARGS, resolv.conf or a
// path is refused; kubelet's and critest's names pass.
func TestCheckPodNames(t *testing.T) {
	md := func(name, ns, uid string) *runtimeapi.PodSandboxMetadata {
		return &runtimeapi.PodSandboxMetadata{Name: name, Namespace: ns, Uid: uid}
	}
	ok := md("web-0", "default", "0b4f1a6e-1d2c-4c4b-9e1f-2a8c3d4e5f60")
	for _, tc := range []struct {
		desc string
		md   *runtimeapi.PodSandboxMetadata
		dns  *runtimeapi.DNSConfig
		ok   bool
	}{
		{"kubelet's", ok, &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local"}, Options: []string{"ndots:5"}}, true},
		{"critest's", md("create-PodSandbox-with-DNS-config", "cri-test-namespace", "a1b2"), nil, true},
		{"static pod", md("etcd-node.example.com", "kube-system", "5f2e3b9c8d7a6e5f4c3b2a1d0e9f8a7b"), nil, true},
		{"CNI_ARGS in the name", md("web;IgnoreUnknown=0", "default", "u"), nil, false},
		{"= in the uid", md("web", "default", "u=1"), nil, false},
		{"slash in the namespace", md("web", "../etc", "u"), nil, false},
		{"newline in the name", md("web\nx", "default", "u"), nil, false},
		{"long namespace", md("web", string(make([]byte, 64)), "u"), nil, false},
		{"newline in a search", ok, &runtimeapi.DNSConfig{Searches: []string{"a\nnameserver 6.6.6.6"}}, false},
		{"space in an option", ok, &runtimeapi.DNSConfig{Options: []string{"ndots:1 rotate"}}, false},
		{"server not an IP", ok, &runtimeapi.DNSConfig{Servers: []string{"dns.example.com"}}, false},
	} {
		err := checkPodNames(tc.md, tc.dns)
		if tc.ok && err != nil || !tc.ok && !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v", tc.desc, err)
		}
	}
}
