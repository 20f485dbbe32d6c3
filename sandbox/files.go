package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// hostShm is the node's /dev/shm, which a pod with the node's IPC
// namespace shares, as in containerd: SysV and POSIX shared memory then
// agree on what exists.
const hostShm = "/dev/shm"

// The files sandbox keeps in a pod's directory, beside the shim's
// (oci/shim's paths.go) and the namespace pins (nsPins).
const (
	hostsFile      = "hosts"
	resolvConfFile = "resolv.conf"
	hostnameFile   = "hostname"
	shmDir         = "shm"
	usernsPin      = "userns"
)

// podFiles are the files the pod's containers see as /etc/hosts,
// /etc/resolv.conf and /etc/hostname.
type podFiles struct {
	hosts, resolvConf, hostname string
}

// writeFiles writes the pod's files into dir. hosts is the node's, as in
// containerd (kubelet mounts its own over it in pods with their own
// network); resolv.conf comes from the pod's DNS config, or is the node's.
func writeFiles(dir string, s Spec) (podFiles, error) {
	f := podFiles{
		hosts:      filepath.Join(dir, hostsFile),
		resolvConf: filepath.Join(dir, resolvConfFile),
		hostname:   filepath.Join(dir, hostnameFile),
	}
	hosts, err := os.ReadFile("/etc/hosts")
	if errors.Is(err, os.ErrNotExist) {
		hosts, err = []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"), nil
	}
	if err != nil {
		return f, fmt.Errorf("read node's hosts file: %w", err)
	}
	resolv, err := resolvConf(s.DNS)
	if err != nil {
		return f, err
	}
	hostname := s.Hostname
	if s.HostNetwork || hostname == "" {
		if hostname, err = os.Hostname(); err != nil {
			return f, err
		}
	}
	for _, w := range []struct {
		path string
		data []byte
	}{{f.hosts, hosts}, {f.resolvConf, resolv}, {f.hostname, []byte(hostname + "\n")}} {
		// 0644: containers running as any user read them.
		if err := os.WriteFile(w.path, w.data, 0o644); err != nil {
			return f, err
		}
	}
	return f, nil
}

func resolvConf(dns *DNS) ([]byte, error) {
	if dns == nil {
		b, err := os.ReadFile("/etc/resolv.conf")
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read node's resolv.conf: %w", err)
		}
		return b, nil
	}
	var b strings.Builder
	for _, s := range dns.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(dns.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
	}
	if len(dns.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return []byte(b.String()), nil
}

// mountShm mounts the pod's /dev/shm, a tmpfs of size bytes that its
// containers will share, at dir/shm.
func mountShm(dir string, size int64) (string, error) {
	path := filepath.Join(dir, shmDir)
	if err := os.Mkdir(path, 0o755); err != nil {
		return "", err
	}
	opts := "mode=1777,size=" + strconv.FormatInt(size, 10)
	if err := unix.Mount("shm", path, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return "", fmt.Errorf("mount pod /dev/shm: %w", err)
	}
	return path, nil
}

// unmountShm unmounts the pod's /dev/shm; nothing mounted is no error.
func unmountShm(dir string) error {
	err := unix.Unmount(filepath.Join(dir, shmDir), unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount pod /dev/shm: %w", err)
	}
	return nil
}
