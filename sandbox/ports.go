package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// reservePorts binds a socket to every host port pod s maps and keeps it
// until releasePorts, as kubelet's hostport manager once did. The portmap
// plugin only adds DNAT rules, which would silently take the port from a
// node process already using it, or be shadowed by another pod's rules;
// the bind makes that a clear error instead. The sockets never listen, so
// nothing connects to ketchd through them.
func (m *Manager) reservePorts(s Spec) (retErr error) {
	var fds []int
	defer func() {
		if retErr != nil {
			closeAll(fds)
		}
	}()
	for _, p := range s.PortMappings {
		if p.HostPort <= 0 {
			continue
		}
		fd, err := bindPort(p.Protocol, p.HostIP, int(p.HostPort))
		if err != nil {
			return err
		}
		if fd >= 0 {
			fds = append(fds, fd)
		}
	}
	if len(fds) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	closeAll(m.ports[s.ID]) // a second reservation (Adopt after Run) replaces the first
	m.ports[s.ID] = fds
	return nil
}

// releasePorts frees the host ports pod id holds; none is no error.
func (m *Manager) releasePorts(id string) {
	m.mu.Lock()
	fds := m.ports[id]
	delete(m.ports, id)
	m.mu.Unlock()
	closeAll(fds)
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// bindPort binds a socket of proto to hostIP:port (every address when
// hostIP is empty) and returns it; -1 for a protocol it does not reserve.
func bindPort(proto, hostIP string, port int) (int, error) {
	typ := unix.SOCK_STREAM
	switch strings.ToUpper(proto) {
	case "", "TCP":
	case "UDP":
		typ = unix.SOCK_DGRAM
	default:
		return -1, nil // SCTP: the kernel may lack it; portmap alone handles it
	}
	ip := netip.IPv4Unspecified()
	if hostIP != "" {
		var err error
		if ip, err = netip.ParseAddr(hostIP); err != nil {
			return -1, fmt.Errorf("host IP %q: %w", hostIP, errdefs.ErrInvalidArgument)
		}
	}
	ip = ip.Unmap()
	family := unix.AF_INET
	var sa unix.Sockaddr
	if ip.Is4() {
		sa = &unix.SockaddrInet4{Port: port, Addr: ip.As4()}
	} else {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: port, Addr: ip.As16()}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("reserve host port %d/%s: %w", port, proto, err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return -1, fmt.Errorf("host port %s:%d/%s is already in use: %w", ip, port, strings.ToLower(proto), errdefs.ErrFailedPrecondition)
		}
		return -1, fmt.Errorf("reserve host port %s:%d/%s: %w", ip, port, proto, err)
	}
	return fd, nil
}
