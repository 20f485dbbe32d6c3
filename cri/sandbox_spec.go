package cri

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ketch.dev/ketch/cri/store"
	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/sandbox"
	"ketch.dev/ketch/sandbox/cni"
)

// newID returns a 64-hex-digit ID, as containerd and CRI-O make them.
func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// checkPodConfig refuses what the CRI does not allow in a pod config.
func (s *Server) checkPodConfig(cfg *runtimeapi.PodSandboxConfig, handler string) error {
	md := cfg.GetMetadata()
	switch {
	case cfg == nil:
		return fmt.Errorf("pod sandbox config is missing: %w", errdefs.ErrInvalidArgument)
	case md.GetName() == "" || md.GetNamespace() == "" || md.GetUid() == "":
		return fmt.Errorf("pod metadata needs a name, namespace and uid (got %q, %q, %q): %w",
			md.GetName(), md.GetNamespace(), md.GetUid(), errdefs.ErrInvalidArgument)
	case handler != "" && !slices.Contains(s.cfg.RuntimeHandlers, handler):
		return fmt.Errorf("runtime handler %q is not configured (have %q): %w", handler, s.cfg.RuntimeHandlers, errdefs.ErrInvalidArgument)
	case cfg.GetLogDirectory() != "" && !filepath.IsAbs(cfg.GetLogDirectory()):
		return fmt.Errorf("log directory %q is not absolute: %w", cfg.GetLogDirectory(), errdefs.ErrInvalidArgument)
	case oci.NULField(cfg) != "":
		// No path, name or sysctl can carry one to the kernel.
		return fmt.Errorf("pod config field %s holds a NUL byte: %w", oci.NULField(cfg), errdefs.ErrInvalidArgument)
	}
	if err := checkPodNames(md, cfg.GetDnsConfig()); err != nil {
		return err
	}
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if ns.GetPid() == runtimeapi.NamespaceMode_TARGET {
		return fmt.Errorf("pid namespace mode TARGET is for containers, not pods: %w", errdefs.ErrInvalidArgument)
	}
	for _, m := range []runtimeapi.NamespaceMode{ns.GetNetwork(), ns.GetIpc()} {
		if m != runtimeapi.NamespaceMode_POD && m != runtimeapi.NamespaceMode_NODE {
			return fmt.Errorf("network and ipc namespaces are POD or NODE, not %s: %w", m, errdefs.ErrInvalidArgument)
		}
	}
	if uids, _, err := oci.PodUserNamespace(cfg); err != nil {
		return err
	} else if uids != nil && !s.cfg.UserNamespaces {
		return fmt.Errorf("pod asks for a user namespace of its own; this node gives none: %w", errdefs.ErrNotImplemented)
	}
	for _, pm := range cfg.GetPortMappings() {
		if pm.GetContainerPort() <= 0 || pm.GetContainerPort() > 65535 || pm.GetHostPort() < 0 || pm.GetHostPort() > 65535 {
			return fmt.Errorf("port mapping %d -> %d is out of range: %w", pm.GetHostPort(), pm.GetContainerPort(), errdefs.ErrInvalidArgument)
		}
		if _, ok := runtimeapi.Protocol_name[int32(pm.GetProtocol())]; !ok {
			return fmt.Errorf("port mapping %d -> %d: protocol %d: %w", pm.GetHostPort(), pm.GetContainerPort(), pm.GetProtocol(), errdefs.ErrInvalidArgument)
		}
		if ip := pm.GetHostIp(); ip != "" && net.ParseIP(ip) == nil {
			return fmt.Errorf("port mapping %d -> %d: host IP %q: %w", pm.GetHostPort(), pm.GetContainerPort(), ip, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// podName is what a pod's name, namespace and uid may be: kubelet's DNS
// names (RFC 1123), in either case as critest and other CRI clients use
// them. They end up in CNI_ARGS (where ';' and '=' separate arguments), in
// paths and in logs.
var podName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// checkPodNames holds the pod's names and DNS settings to what kubelet
// itself allows.
func checkPodNames(md *runtimeapi.PodSandboxMetadata, dns *runtimeapi.DNSConfig) error {
	for _, f := range []struct {
		what, v string
		max     int
	}{{"name", md.GetName(), 253}, {"namespace", md.GetNamespace(), 63}, {"uid", md.GetUid(), 256}} {
		if len(f.v) > f.max || !podName.MatchString(f.v) {
			return fmt.Errorf("pod %s %q: want at most %d letters, digits, '.', '_' or '-', starting and ending with a letter or digit: %w",
				f.what, f.v, f.max, errdefs.ErrInvalidArgument)
		}
	}
	for _, ip := range dns.GetServers() {
		if _, err := netip.ParseAddr(ip); err != nil {
			return fmt.Errorf("pod DNS server %q is not an IP address: %w", ip, errdefs.ErrInvalidArgument)
		}
	}
	// One resolv.conf line each: no line break or space may get in.
	for _, v := range append(slices.Clone(dns.GetSearches()), dns.GetOptions()...) {
		if v == "" || len(v) > 253 || strings.ContainsFunc(v, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
			return fmt.Errorf("pod DNS search or option %q: empty, over 253 bytes, or with a space or control character: %w", v, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// podSpec translates a pod config into what sandbox.Manager runs. It is
// also how Stop and Remove rebuild the Spec from the stored config.
func podSpec(id string, cfg *runtimeapi.PodSandboxConfig) sandbox.Spec {
	md := cfg.GetMetadata()
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	s := sandbox.Spec{
		ID:           id,
		Name:         md.GetName(),
		Namespace:    md.GetNamespace(),
		UID:          md.GetUid(),
		Hostname:     cfg.GetHostname(),
		HostNetwork:  ns.GetNetwork() == runtimeapi.NamespaceMode_NODE,
		HostPID:      ns.GetPid() == runtimeapi.NamespaceMode_NODE,
		HostIPC:      ns.GetIpc() == runtimeapi.NamespaceMode_NODE,
		SharedPID:    ns.GetPid() == runtimeapi.NamespaceMode_POD,
		CgroupParent: cfg.GetLinux().GetCgroupParent(),
		Sysctls:      cfg.GetLinux().GetSysctls(),
	}
	// checkPodConfig refused what cannot be translated.
	if uids, gids, _ := oci.PodUserNamespace(cfg); uids != nil {
		s.UserNS = &sandbox.UserNS{UIDs: uids, GIDs: gids}
	}
	if d := cfg.GetDnsConfig(); d != nil {
		s.DNS = &sandbox.DNS{Servers: d.GetServers(), Searches: d.GetSearches(), Options: d.GetOptions()}
	}
	for _, pm := range cfg.GetPortMappings() {
		s.PortMappings = append(s.PortMappings, cni.PortMapping{
			Protocol:      pm.GetProtocol().String(),
			ContainerPort: pm.GetContainerPort(),
			HostPort:      pm.GetHostPort(),
			HostIP:        pm.GetHostIp(),
		})
	}
	return s
}

// storedSpec rebuilds the Spec a stored pod was run from.
func storedSpec(sb store.Sandbox) (sandbox.Spec, error) {
	cfg, err := storedPodConfig(sb)
	if err != nil {
		return sandbox.Spec{}, err
	}
	return podSpec(sb.ID, cfg), nil
}

// storedPodConfig is the config a stored pod was run from.
func storedPodConfig(sb store.Sandbox) (*runtimeapi.PodSandboxConfig, error) {
	var cfg runtimeapi.PodSandboxConfig
	if err := proto.Unmarshal(sb.Config, &cfg); err != nil {
		return nil, fmt.Errorf("pod %s: stored config: %w: %w", sb.ID, errdefs.ErrDataLoss, err)
	}
	return &cfg, nil
}

// sandboxKey is the name a pod reserves: kubelet makes a new attempt, not a
// second pod of the same attempt.
func sandboxKey(md *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s_%s_%s_%d", md.GetName(), md.GetNamespace(), md.GetUid(), md.GetAttempt())
}
