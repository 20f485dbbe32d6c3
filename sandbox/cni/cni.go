// Package cni sets up pod networks through CNI plugins (libcni). For now it
// answers whether a network config is there to use.
package cni

import (
	"fmt"

	"github.com/containernetworking/cni/libcni"
)

// Config names where CNI network configs and plugins live.
type Config struct {
	ConfDir string
	BinDirs []string
}

// Ready reports nil once ConfDir holds a loadable network config, and
// otherwise why pods cannot be networked yet. It reads the directory on every
// call so a config dropped in later is seen without a restart.
func (c Config) Ready() error {
	files, err := libcni.ConfFiles(c.ConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return fmt.Errorf("read CNI config dir %s: %w", c.ConfDir, err)
	}
	for _, f := range files {
		if _, err := libcni.NetworkConfFromFile(f); err == nil {
			return nil
		}
	}
	return fmt.Errorf("no network config found in %s", c.ConfDir)
}
