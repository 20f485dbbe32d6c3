package cri

import (
	"net/netip"
	"strings"
	"testing"
	"unicode"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fuzzPod is the part of a pod config FuzzCheckPodConfig varies. Lists are
// comma-separated.
type fuzzPod struct {
	name, namespace, uid, hostname, logDir, handler string
	dnsServers, dnsSearches, dnsOptions             string
	containerPort, hostPort, protocol               int32
	hostIP                                          string
	netMode, pidMode, ipcMode                       int32
	userns                                          bool // has user namespace options
	usernsMode                                      int32
	hostID, length                                  uint32
}

// fuzzPods are pods as kubelet, critest and crictl send them, and a few
// that try to get into CNI_ARGS, resolv.conf or a path.
var fuzzPods = []fuzzPod{
	{ // kubelet: a deployment's pod with a service port on the node
		name: "web-7d4b9c6f5-x2x7q", namespace: "default", uid: "0b4f1a6e-1d2c-4c4b-9e1f-2a8c3d4e5f60",
		hostname: "web-7d4b9c6f5-x2x7q", logDir: "/var/log/pods/default_web-7d4b9c6f5-x2x7q_0b4f1a6e-1d2c-4c4b-9e1f-2a8c3d4e5f60",
		dnsServers: "10.96.0.10", dnsSearches: "default.svc.cluster.local,svc.cluster.local,cluster.local", dnsOptions: "ndots:5",
		containerPort: 80, hostPort: 8080, protocol: int32(runtimeapi.Protocol_TCP), pidMode: int32(runtimeapi.NamespaceMode_CONTAINER),
	},
	{ // kubelet: a static pod on the node's network
		name: "etcd-node.example.com", namespace: "kube-system", uid: "5f2e3b9c8d7a6e5f4c3b2a1d0e9f8a7b",
		logDir: "/var/log/pods/kube-system_etcd", netMode: int32(runtimeapi.NamespaceMode_NODE), pidMode: int32(runtimeapi.NamespaceMode_CONTAINER),
	},
	{ // kubelet: hostUsers: false
		name: "userns", namespace: "default", uid: "a1b2c3", hostname: "userns", pidMode: int32(runtimeapi.NamespaceMode_CONTAINER),
		userns: true, usernsMode: int32(runtimeapi.NamespaceMode_POD), hostID: 65536, length: 65536,
	},
	{ // critest
		name: "create-PodSandbox-with-DNS-config", namespace: "cri-test-namespace", uid: "a1b2", handler: "ketch",
		dnsServers: "8.8.8.8,2001:4860:4860::8888", dnsSearches: "google.com", dnsOptions: "timeout:5",
		containerPort: 12000, hostPort: 12000, protocol: int32(runtimeapi.Protocol_UDP), hostIP: "127.0.0.1",
	},
	{ // crictl runp with a minimal pod.json
		name: "nginx-sandbox", namespace: "default", uid: "hdishd83djaidwnduwk28bcsb", logDir: "/tmp",
	},
	{name: "web;IgnoreUnknown=0", namespace: "ns=x", uid: "u\nv"},
	{name: "web", namespace: "../etc", uid: "u", dnsSearches: "a\nnameserver 6.6.6.6", dnsOptions: "ndots:1 rotate"},
	{name: "web", namespace: "default", uid: "u", logDir: "relative", pidMode: int32(runtimeapi.NamespaceMode_TARGET),
		netMode: 7, containerPort: 70000, hostPort: -1, protocol: 9, userns: true, usernsMode: int32(runtimeapi.NamespaceMode_NODE), hostID: 1, length: 1},
}

func (p fuzzPod) config() *runtimeapi.PodSandboxConfig {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: p.name, Namespace: p.namespace, Uid: p.uid, Attempt: 1},
		Hostname:     p.hostname,
		LogDirectory: p.logDir,
		PortMappings: []*runtimeapi.PortMapping{{
			Protocol: runtimeapi.Protocol(p.protocol), ContainerPort: p.containerPort, HostPort: p.hostPort, HostIp: p.hostIP,
		}},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{
				Network: runtimeapi.NamespaceMode(p.netMode),
				Pid:     runtimeapi.NamespaceMode(p.pidMode),
				Ipc:     runtimeapi.NamespaceMode(p.ipcMode),
			},
		}},
	}
	if p.dnsServers+p.dnsSearches+p.dnsOptions != "" {
		cfg.DnsConfig = &runtimeapi.DNSConfig{Servers: list(p.dnsServers), Searches: list(p.dnsSearches), Options: list(p.dnsOptions)}
	}
	if p.userns {
		m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: p.hostID, Length: p.length}}
		cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{
			Mode: runtimeapi.NamespaceMode(p.usernsMode), Uids: m, Gids: m,
		}
	}
	return cfg
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func fuzzServer() *Server {
	return &Server{cfg: Config{RuntimeHandlers: []string{"ketch"}, UserNamespaces: true}}
}

// checkPodConfigResult fails t unless err is what checkPodConfig
// documents, and, for an accepted pod, unless its names and DNS settings
// are safe to put into CNI_ARGS (';' and '=' separate arguments), paths
// and resolv.conf (one setting a line).
func checkPodConfigResult(t *testing.T, cfg *runtimeapi.PodSandboxConfig, err error) {
	t.Helper()
	if err != nil {
		if !errdefs.IsInvalidArgument(err) && !errdefs.IsNotImplemented(err) {
			t.Fatalf("checkPodConfig(%v): %v, want InvalidArgument or NotImplemented", cfg, err)
		}
		return
	}
	md := cfg.GetMetadata()
	for _, v := range []string{md.GetName(), md.GetNamespace(), md.GetUid()} {
		if v == "" || strings.ContainsAny(v, ";=\n\r\x00/ ") {
			t.Fatalf("pod name, namespace or uid %q was accepted", v)
		}
	}
	dns := cfg.GetDnsConfig()
	for _, v := range append(append([]string{}, dns.GetSearches()...), dns.GetOptions()...) {
		if v == "" || strings.ContainsFunc(v, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
			t.Fatalf("DNS search or option %q was accepted", v)
		}
	}
	for _, v := range dns.GetServers() {
		if _, err := netip.ParseAddr(v); err != nil {
			t.Fatalf("DNS server %q was accepted", v)
		}
	}
	// What an accepted pod is run from must say what it asked for.
	s := podSpec("id", cfg)
	if s.Name != md.GetName() || s.Namespace != md.GetNamespace() || s.UID != md.GetUid() || len(s.PortMappings) != len(cfg.GetPortMappings()) {
		t.Fatalf("podSpec = %+v of accepted %v", s, cfg)
	}
}

// FuzzCheckPodConfig: whatever a client puts in a pod config's names, DNS,
// ports and namespace modes, checkPodConfig refuses it as InvalidArgument
// (NotImplemented for what the node lacks) or lets through only what
// cannot break out of CNI_ARGS, resolv.conf or a path.
func FuzzCheckPodConfig(f *testing.F) {
	for _, p := range fuzzPods {
		f.Add(p.name, p.namespace, p.uid, p.hostname, p.logDir, p.handler, p.dnsServers, p.dnsSearches, p.dnsOptions,
			p.containerPort, p.hostPort, p.protocol, p.hostIP, p.netMode, p.pidMode, p.ipcMode, p.userns, p.usernsMode, p.hostID, p.length)
	}
	f.Fuzz(func(t *testing.T, name, namespace, uid, hostname, logDir, handler, dnsServers, dnsSearches, dnsOptions string,
		containerPort, hostPort, protocol int32, hostIP string, netMode, pidMode, ipcMode int32, userns bool, usernsMode int32, hostID, length uint32) {
		cfg := fuzzPod{
			name: name, namespace: namespace, uid: uid, hostname: hostname, logDir: logDir, handler: handler,
			dnsServers: dnsServers, dnsSearches: dnsSearches, dnsOptions: dnsOptions,
			containerPort: containerPort, hostPort: hostPort, protocol: protocol, hostIP: hostIP,
			netMode: netMode, pidMode: pidMode, ipcMode: ipcMode, userns: userns, usernsMode: usernsMode, hostID: hostID, length: length,
		}.config()
		checkPodConfigResult(t, cfg, fuzzServer().checkPodConfig(cfg, handler))
	})
}

// FuzzPodSandboxConfigProto: a pod config as it comes off the wire (or out
// of a stored record), whatever its bytes, is checked and translated
// without a panic.
func FuzzPodSandboxConfigProto(f *testing.F) {
	for _, p := range fuzzPods {
		cfg := p.config()
		cfg.Labels = map[string]string{"app": p.name, "io.kubernetes.pod.name": p.name}
		cfg.Annotations = map[string]string{"kubernetes.io/config.source": "api"}
		cfg.Linux.CgroupParent = "/kubepods/burstable/pod" + p.uid
		cfg.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"}
		b, err := proto.Marshal(cfg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var cfg runtimeapi.PodSandboxConfig
		if err := proto.Unmarshal(b, &cfg); err != nil {
			return // refused by the gRPC server before any handler runs
		}
		err := fuzzServer().checkPodConfig(&cfg, "")
		checkPodConfigResult(t, &cfg, err)
		// Stop and Remove rebuild the Spec from the stored config, and a
		// record may predate a check: no config may make that panic.
		_ = podSpec("id", &cfg)
		_ = sandboxKey(cfg.GetMetadata())
	})
}
