package sandbox

import (
	"context"
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/cgroups/systemd"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"ketch.dev/ketch/oci"
	"ketch.dev/ketch/oci/shim"
	"ketch.dev/ketch/sandbox/netns"
)

// Stats is a pod's resource usage: its cgroup's, and its interfaces' in
// its own network namespace.
type Stats struct {
	shim.Stats
	Interfaces []Interface // none for a pod on the node's network
}

// Interface is one network interface's counters.
type Interface struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// Stats reads pod s's usage. A pod whose shim is gone has none:
// errdefs.ErrNotFound.
func (m *Manager) Stats(ctx context.Context, s Spec) (Stats, error) {
	c, err := m.client(ctx, s.ID)
	if err != nil {
		return Stats{}, fmt.Errorf("stats of pod %s: %w", s.ID, err)
	}
	var st shim.Stats
	if hasInit(s) {
		st, err = c.Stats(ctx, s.ID, shim.StatsOptions{Pod: ownCgroup(s)})
	} else {
		st, err = m.cgroupStats(s)
	}
	if err != nil {
		return Stats{}, fmt.Errorf("stats of pod %s: %w", s.ID, err)
	}
	out := Stats{Stats: st}
	if s.HostNetwork {
		return out, nil
	}
	if st.NetDev != nil {
		out.Interfaces, err = parseNetDev(st.NetDev)
		return out, err
	}
	// A shim an older ketchd started sends no NetDev: read the counters
	// in the pod's netns.
	err = netns.Do(m.netnsPath(s.ID), func() error {
		out.Interfaces, err = interfaces()
		return err
	})
	if errdefs.IsNotFound(err) {
		return out, nil // a stopped pod's netns may be gone
	}
	if err != nil {
		return Stats{}, fmt.Errorf("network stats of pod %s: %w", s.ID, err)
	}
	return out, nil
}

// cgroupStats reads the cgroup of a pod without ketch-init: its own, where
// it has one; else it has no figures of its own, only its containers'.
func (m *Manager) cgroupStats(s Spec) (shim.Stats, error) {
	if !ownCgroup(s) {
		return shim.Stats{At: time.Now()}, nil
	}
	p := path.Join("/", s.CgroupParent)
	if m.o.CgroupDriver == oci.CgroupDriverSystemd {
		var err error
		if p, err = systemd.ExpandSlice(s.CgroupParent); err != nil {
			return shim.Stats{}, fmt.Errorf("cgroup parent %q: %w: %w", s.CgroupParent, errdefs.ErrInvalidArgument, err)
		}
	}
	paths, err := oci.CgroupPaths(p)
	if err != nil {
		return shim.Stats{}, err
	}
	return shim.ReadCgroup(paths, false)
}

// ownCgroup tells whether the pod's cgroup parent is the pod's own, which
// holds all its containers and nothing else: kubelet makes one per pod and
// names it for the pod's UID (".../pod<uid>" with cgroupfs,
// "...-pod<uid with _>.slice" with systemd). A parent shared with other
// pods, or none, leaves the pod its sandbox's cgroup to report.
func ownCgroup(s Spec) bool {
	if s.UID == "" {
		return false
	}
	base := path.Base(s.CgroupParent)
	return strings.HasSuffix(base, "pod"+s.UID) || strings.HasSuffix(base, "pod"+strings.ReplaceAll(s.UID, "-", "_")+".slice")
}

// parseNetDev reads the interfaces of a /proc/net/dev, lo left out.
func parseNetDev(b []byte) ([]Interface, error) {
	var out []Interface
	for _, l := range strings.Split(string(b), "\n") {
		name, counters, ok := strings.Cut(l, ":")
		if !ok {
			continue // the two header lines
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(counters)
		if len(f) != 16 {
			return nil, fmt.Errorf("/proc/net/dev line %q: %d counters, want 16", l, len(f))
		}
		var n [16]uint64
		for i, s := range f {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/dev line %q: %w", l, err)
			}
			n[i] = v
		}
		if name == "lo" {
			continue
		}
		// Receive: bytes packets errs drop fifo frame compressed
		// multicast; then transmit: bytes packets errs drop ...
		out = append(out, Interface{Name: name,
			RxBytes: n[0], RxPackets: n[1], RxErrors: n[2], RxDropped: n[3],
			TxBytes: n[8], TxPackets: n[9], TxErrors: n[10], TxDropped: n[11]})
	}
	return out, nil
}

// interfaces lists the counters of the current thread's netns, lo left out.
func interfaces() ([]Interface, error) {
	// A handle of its own: netlink's package handle was opened in the
	// node's netns.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	var out []Interface
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || a.Statistics == nil {
			continue
		}
		n := a.Statistics
		out = append(out, Interface{Name: a.Name,
			RxBytes: n.RxBytes, RxPackets: n.RxPackets, RxErrors: n.RxErrors, RxDropped: n.RxDropped,
			TxBytes: n.TxBytes, TxPackets: n.TxPackets, TxErrors: n.TxErrors, TxDropped: n.TxDropped})
	}
	return out, nil
}
