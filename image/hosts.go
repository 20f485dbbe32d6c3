package image

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/core/remotes/docker/config"
)

// CheckHostsConfig parses every <host>/hosts.toml under dir as a pull
// would, so that a broken file shows before the first pull that needs it.
// A dir that does not exist holds no configuration.
func CheckHostsConfig(ctx context.Context, dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || dir == "" {
		return nil
	}
	if err != nil {
		return err
	}
	hosts := config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(dir)})
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := hosts(e.Name()); err != nil {
			return fmt.Errorf("%s/%s/hosts.toml: %w", dir, e.Name(), err)
		}
	}
	return nil
}
