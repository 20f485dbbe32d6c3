// Package cni sets up and tears down pod networks through CNI plugins
// (libcni), with the first network config in the config directory, as
// kubelet's CNI support and containerd do.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
)

// Config names where CNI network configs and plugins live.
type Config struct {
	ConfDir string
	BinDirs []string
	// CacheDir is where libcni records what each ADD did, so DEL can undo
	// it with the same config and arguments; "" is libcni's /var/lib/cni.
	// It must live as long as the IPAM allocations it describes.
	CacheDir string
}

// Ready reports nil once ConfDir holds a loadable network config, and
// otherwise why pods cannot be networked yet. It reads the directory on every
// call so a config dropped in later is seen without a restart.
func (c Config) Ready() error {
	_, err := c.network()
	return err
}

// network loads the network kubelet would use: the first file in ConfDir, in
// name order, that parses and names at least one plugin. It reads the
// directory on every call: a conf file is a few hundred bytes (tens of
// microseconds to parse, against milliseconds for one plugin exec), and a
// re-read cannot miss a change the way an mtime check on an edited-in-place
// file within one timestamp tick could.
func (c Config) network() (*libcni.NetworkConfigList, error) {
	// ConfFiles lists in name order (os.ReadDir sorts), as kubelet requires.
	files, err := libcni.ConfFiles(c.ConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("read CNI config dir %s: %w", c.ConfDir, err)
	}
	var bad []string
	for _, f := range files {
		list, err := loadFile(f)
		if err == nil {
			return list, nil
		}
		bad = append(bad, fmt.Sprintf("%s: %v", filepath.Base(f), err))
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("no usable network config in %s (%s): %w",
			c.ConfDir, strings.Join(bad, "; "), errdefs.ErrFailedPrecondition)
	}
	return nil, fmt.Errorf("no network config found in %s: %w", c.ConfDir, errdefs.ErrFailedPrecondition)
}

// loadFile reads a .conflist, or a single-plugin .conf/.json that it wraps
// in a list of one, as kubelet and containerd accept both.
func loadFile(path string) (*libcni.NetworkConfigList, error) {
	if filepath.Ext(path) == ".conflist" {
		return libcni.NetworkConfFromFile(path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	plugin, err := libcni.NetworkPluginConfFromBytes(b)
	if err != nil {
		return nil, err
	}
	list, err := json.Marshal(map[string]any{
		"name":       plugin.Network.Name,
		"cniVersion": plugin.Network.CNIVersion,
		"plugins":    []json.RawMessage{b},
	})
	if err != nil {
		return nil, err
	}
	return libcni.NetworkConfFromBytes(list)
}

// podCIDRsFile keeps the node's pod CIDRs beside libcni's records: kubelet
// sends them once (UpdateRuntimeConfig) and not again to a restarted ketchd.
const podCIDRsFile = "pod-cidrs"

// SetPodCIDRs records the node's pod CIDRs (kubelet's node.spec.podCIDRs),
// which every later ADD offers the plugins as the ipRanges capability
// argument: a network whose IPAM declares it (host-local does) allocates from
// them. An empty list forgets them.
func (c Config) SetPodCIDRs(cidrs []string) error {
	for _, s := range cidrs {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("pod CIDR %q: %w", s, errdefs.ErrInvalidArgument)
		}
	}
	if err := os.MkdirAll(c.cacheDir(), 0o700); err != nil {
		return err
	}
	path := filepath.Join(c.cacheDir(), podCIDRsFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(cidrs, "\n")), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// PodCIDRs are the node's pod CIDRs SetPodCIDRs recorded last, if any.
func (c Config) PodCIDRs() ([]string, error) {
	b, err := os.ReadFile(filepath.Join(c.cacheDir(), podCIDRsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

func (c Config) cacheDir() string {
	if c.CacheDir == "" {
		return libcni.CacheDir
	}
	return c.CacheDir
}
