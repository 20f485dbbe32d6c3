package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"go.opentelemetry.io/otel/attribute"

	"ketch.dev/ketch/metrics"
	"ketch.dev/ketch/sandbox/netns"
	"ketch.dev/ketch/tracing"
)

// ifName is the pod's interface, the name kubelet's CNI support gave it.
const ifName = "eth0"

// undoTimeout bounds the DEL that Setup runs after a failed ADD. It is not
// the request's deadline, because that expiring may be why ADD failed.
const undoTimeout = 10 * time.Second

// Pod is what the plugins learn about a pod besides its ID and netns.
type Pod struct {
	Namespace, Name, UID string
	PortMappings         []PortMapping
}

// PortMapping is one CRI port mapping: HostPort on the node (on HostIP
// only, when set) forwards to ContainerPort in the pod.
type PortMapping struct {
	Protocol      string // TCP, UDP or SCTP in any case; "" is TCP
	ContainerPort int32
	HostPort      int32 // 0: not exposed on the node, as in CRI
	HostIP        string
}

// Result is what Setup learned from the plugins.
type Result struct {
	// IPs of the pod's interface, IPv4 first: the first is the pod IP in
	// PodSandboxStatus, and containerd prefers IPv4 too.
	IPs []netip.Addr
}

// Manager networks pods with the CNI plugins of the network Config names.
// It keeps no state between calls, so it is safe for concurrent use: what
// each ADD did is recorded by libcni in Config.CacheDir, which DEL reads.
type Manager struct {
	cfg Config
	cni *libcni.CNIConfig
}

// NewManager returns a Manager for cfg. The config directory is read at
// each Setup and Status, so a config installed later is picked up.
func NewManager(cfg Config) *Manager {
	return &Manager{cfg: cfg, cni: libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, cfg.CacheDir, &pluginExec{})}
}

// Setup attaches the pod in the netns pinned at netnsPath to the network
// (CNI ADD) and returns its IPs. ctx bounds the plugins: one still running
// at the deadline is killed with its children. When ADD fails, Setup runs
// DEL before it returns, so a failed Setup leaves no interface, IP
// allocation or firewall rule behind.
func (m *Manager) Setup(ctx context.Context, podID, netnsPath string, pod Pod) (_ Result, retErr error) {
	ctx, done := measure(ctx, "add", podID)
	defer done(&retErr)
	if podID == "" || netnsPath == "" {
		return Result{}, fmt.Errorf("pod network needs a pod ID and a netns: %w", errdefs.ErrInvalidArgument)
	}
	list, err := m.cfg.network()
	if err != nil {
		return Result{}, fmt.Errorf("set up network of pod %s: %w", podID, err)
	}
	if err := netns.Check(netnsPath); err != nil {
		return Result{}, fmt.Errorf("set up network of pod %s: %w", podID, err)
	}
	cidrs, err := m.cfg.PodCIDRs()
	if err != nil {
		return Result{}, fmt.Errorf("set up network of pod %s: %w", podID, err)
	}
	rt := runtimeConf(podID, netnsPath, pod, cidrs)
	res, err := m.cni.AddNetworkList(ctx, list, rt)
	if err == nil {
		var addrs []net.IPNet
		if addrs, err = podAddrs(res); err == nil {
			return Result{IPs: ipv4First(addrs)}, nil
		}
	}
	if uerr := m.undo(ctx, list, rt); uerr != nil {
		err = fmt.Errorf("%w; undoing it failed too: %v", err, uerr)
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	} else {
		// A plugin's refusal: the network cannot take the pod now.
		err = fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	return Result{}, fmt.Errorf("CNI ADD to network %q for pod %s: %w", list.Name, podID, err)
}

// undo runs DEL after a failed ADD, which is not atomic: the plugins before
// the one that failed did their part (veth, IP, rules). It has its own
// deadline, as the caller's expiring may be why ADD failed.
func (m *Manager) undo(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	return m.delAll(ctx, list, rt)
}

// delAll runs DEL for an ADD that may not have finished. libcni's
// DelNetworkList stops at the first plugin that fails, so when it fails,
// each plugin is asked on its own, in the same reverse order, so that one
// plugin (the one missing from disk, say) cannot keep the others from
// undoing their part. A plugin that is not installed did nothing to undo.
func (m *Manager) delAll(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	if m.cni.DelNetworkList(ctx, list, rt) == nil {
		return nil
	}
	var errs []error
	for i := len(list.Plugins) - 1; i >= 0; i-- {
		if _, err := invoke.FindInPath(list.Plugins[i].Network.Type, m.cfg.BinDirs); err != nil {
			continue
		}
		one := *list
		one.Plugins = list.Plugins[i : i+1]
		if err := m.cni.DelNetworkList(ctx, &one, rt); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Teardown detaches the pod from its network (CNI DEL). It is idempotent:
// a pod that has no network, or was torn down before, succeeds.
//
// DEL runs with the config and arguments its ADD used, as libcni recorded
// them, so a config dir changed since, or a pod without port mappings,
// still undoes exactly what ADD did; pod is used only when there is no
// record. A netns that vanished is no reason to keep the pod's IPs: DEL
// runs anyway.
func (m *Manager) Teardown(ctx context.Context, podID, netnsPath string, pod Pod) (retErr error) {
	ctx, done := measure(ctx, "del", podID)
	defer done(&retErr)
	if podID == "" {
		return fmt.Errorf("pod network teardown needs a pod ID: %w", errdefs.ErrInvalidArgument)
	}
	atts, err := m.recorded(podID, netnsPath)
	if err != nil {
		return fmt.Errorf("tear down network of pod %s: %w", podID, err)
	}
	for _, a := range atts {
		if err := m.del(ctx, a); err != nil {
			return fmt.Errorf("CNI DEL from network %q for pod %s: %w", a.list.Name, podID, err)
		}
	}
	if len(atts) > 0 {
		return nil
	}
	// No record: ADD never finished, or DEL already ran. A DEL with the
	// current config covers an ADD that ketchd died in the middle of.
	list, err := m.cfg.network()
	if errors.Is(err, errdefs.ErrFailedPrecondition) {
		return nil // no config, so no plugin to ask
	}
	if err != nil {
		return fmt.Errorf("tear down network of pod %s: %w", podID, err)
	}
	if netnsPath != "" && netns.Check(netnsPath) != nil {
		netnsPath = "" // see del
	}
	if err := m.delAll(ctx, list, runtimeConf(podID, netnsPath, pod, nil)); err != nil {
		return fmt.Errorf("CNI DEL from network %q for pod %s: %w", list.Name, podID, err)
	}
	return nil
}

// Status reports nil when pods can be networked: a network config is
// loadable and, for CNI 1.1 configs, its plugins answer STATUS.
func (m *Manager) Status(ctx context.Context) error {
	list, err := m.cfg.network()
	if err != nil {
		return err
	}
	if err := m.cni.GetStatusNetworkList(ctx, list); err != nil {
		return fmt.Errorf("network %q not ready: %w: %w", list.Name, err, errdefs.ErrUnavailable)
	}
	return nil
}

// attachment is one network a pod is attached to, with the arguments to
// detach it.
type attachment struct {
	list *libcni.NetworkConfigList
	rt   *libcni.RuntimeConf
}

// recorded returns the networks libcni recorded ADDs of the pod to.
func (m *Manager) recorded(podID, netnsPath string) ([]attachment, error) {
	cached, err := m.cni.GetCachedAttachments(podID)
	if err != nil {
		return nil, fmt.Errorf("read CNI cache: %w", err)
	}
	var atts []attachment
	for _, c := range cached {
		list, err := libcni.NetworkConfFromBytes(c.Config)
		if err != nil {
			return nil, fmt.Errorf("cached config of network %q: %w", c.Network, err)
		}
		if len(list.Plugins) == 0 {
			continue // its plugins came from files the cache does not hold
		}
		ns := netnsPath
		if ns == "" {
			ns = c.NetNS
		}
		atts = append(atts, attachment{list, &libcni.RuntimeConf{
			ContainerID:    podID,
			NetNS:          ns,
			IfName:         c.IfName,
			Args:           c.CniArgs,
			CapabilityArgs: c.CapabilityArgs,
		}})
	}
	return atts, nil
}

func (m *Manager) del(ctx context.Context, a attachment) error {
	rt := *a.rt
	var standIn string
	if rt.NetNS != "" && errors.Is(netns.Check(rt.NetNS), errdefs.ErrNotFound) {
		res, err := m.cni.GetNetworkListCachedResult(a.list, &rt)
		if err == nil {
			standIn, err = newStandIn(rt.NetNS, rt.IfName, res)
		}
		if err != nil {
			slog.Warn("no stand-in netns for CNI DEL; plugins may leave rules behind",
				"pod", rt.ContainerID, "netns", rt.NetNS, "error", err)
		}
		// Without a stand-in, no netns at all: CNI_NETNS is optional for
		// DEL, while a path that exists but pins nothing would make the
		// bridge plugin fail rather than release the IPs.
		rt.NetNS = standIn
	}
	err := m.cni.DelNetworkList(ctx, a.list, &rt)
	if standIn != "" {
		err = errors.Join(err, netns.Remove(standIn))
	}
	return err
}

// portMapping is the portMappings capability argument of one mapping, in
// the form the CNI conventions (and the portmap plugin) define.
type portMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// ipRange is one range of the ipRanges capability argument.
type ipRange struct {
	Subnet string `json:"subnet"`
}

func runtimeConf(podID, netnsPath string, pod Pod, podCIDRs []string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: podID,
		NetNS:       netnsPath,
		IfName:      ifName,
		Args: [][2]string{
			// Without it, plugins that do not know the K8S_ keys refuse them.
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", podID},
			{"K8S_POD_UID", pod.UID},
		},
	}
	var ports []portMapping
	for _, p := range pod.PortMappings {
		if p.HostPort <= 0 {
			continue
		}
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		ports = append(ports, portMapping{p.HostPort, p.ContainerPort, proto, p.HostIP})
	}
	rt.CapabilityArgs = map[string]any{}
	if len(ports) > 0 {
		rt.CapabilityArgs["portMappings"] = ports
	}
	// One range set per CIDR (an IPv4 and an IPv6 one on a dual-stack
	// node), as CNI's conventions define ipRanges.
	var ranges [][]ipRange
	for _, c := range podCIDRs {
		ranges = append(ranges, []ipRange{{Subnet: c}})
	}
	if len(ranges) > 0 {
		rt.CapabilityArgs["ipRanges"] = ranges
	}
	return rt
}

// podAddrs returns the addresses of the pod's own interfaces, leaving out
// those of host-side interfaces (a bridge's gateway) that plugins may report.
func podAddrs(res types.Result) ([]net.IPNet, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("CNI result: %w", err)
	}
	var addrs []net.IPNet
	for _, ip := range r.IPs {
		if i := ip.Interface; i != nil && (*i < 0 || *i >= len(r.Interfaces) || r.Interfaces[*i].Sandbox == "") {
			continue
		}
		addrs = append(addrs, ip.Address)
	}
	return addrs, nil
}

func ipv4First(addrs []net.IPNet) []netip.Addr {
	ips := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			ips = append(ips, ip.Unmap())
		}
	}
	slices.SortStableFunc(ips, func(a, b netip.Addr) int {
		switch {
		case a.Is4() == b.Is4():
			return 0
		case a.Is4():
			return -1
		}
		return 1
	})
	return ips
}

// measure begins a CNI operation's span; the function it returns ends
// it, times the operation and counts its failure.
func measure(ctx context.Context, op, podID string) (context.Context, func(*error)) {
	start := time.Now()
	ctx, span := tracing.Start(ctx, "cni."+op, attribute.String("pod", podID))
	return ctx, func(err *error) {
		tracing.End(span, *err)
		metrics.Since(metrics.CNIDuration.WithLabelValues(op), start)
		if *err != nil {
			metrics.CNIFailures.WithLabelValues(op).Inc()
		}
	}
}
