package cni

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"ketch.dev/ketch/sandbox/netns"
)

// newStandIn pins a throwaway netns next to the vanished one, holding an
// interface named ifName, like the pod's, with the addresses ADD gave it
// (from res, libcni's record of the ADD), and returns its path; "" when
// the record names no address.
//
// Plugins find part of what to undo through the pod's interface: the
// bridge and ptp plugins read its addresses to find their masquerade
// rules, and skip those rules when the interface is gone. DEL in a vanished
// netns would release the IPs but leave the rules in the host's nat table
// for good; DEL in the stand-in removes them too.
func newStandIn(vanished, ifName string, res types.Result) (string, error) {
	if res == nil {
		return "", nil
	}
	addrs, err := podAddrs(res)
	if err != nil || len(addrs) == 0 {
		return "", err
	}
	dir, id := filepath.Split(vanished)
	id += ".teardown"
	// A stand-in left by a Teardown that died half-way would block Create.
	if err := netns.Remove(filepath.Join(dir, id)); err != nil {
		return "", err
	}
	path, err := netns.Create(dir, id)
	if err != nil {
		return "", err
	}
	if err := addInterface(path, ifName, addrs); err != nil {
		return "", errors.Join(fmt.Errorf("stand-in netns: %w", err), netns.Remove(path))
	}
	return path, nil
}

// addInterface adds ifName with addrs to the netns at path. It is one end
// of a veth pair whose other end stays in that netns too: veth is what the
// plugins themselves use, so unlike dummy it is there on every node.
func addInterface(path, ifName string, addrs []net.IPNet) error {
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifName}, PeerName: "standin0"}
	if err := h.LinkAdd(link); err != nil {
		return fmt.Errorf("add %s: %w", ifName, err)
	}
	for _, a := range addrs {
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: &a}); err != nil {
			return fmt.Errorf("add %s to %s: %w", a.String(), ifName, err)
		}
	}
	return nil
}
