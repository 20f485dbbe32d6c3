package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// installRootfs makes the read-only rootfs every pod's ketch-init runs from
// (no image is pulled for a sandbox) and returns its path: ketch-init, the
// mount points its runtime spec needs, and nothing else. The directory is
// named by the binary's digest, so pods that run from an older ketch-init
// keep their rootfs when an upgrade installs a new one.
func installRootfs(dir, initBinary string) (string, error) {
	data, err := os.ReadFile(initBinary)
	if err != nil {
		return "", fmt.Errorf("sandbox rootfs: %w", err)
	}
	sum := sha256.Sum256(data)
	rootfs := filepath.Join(dir, "rootfs-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(rootfs, "ketch-init")); err == nil {
		return rootfs, nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", fmt.Errorf("sandbox rootfs: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".rootfs-")
	if err != nil {
		return "", fmt.Errorf("sandbox rootfs: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	for _, d := range []string{"proc", "dev", "sys", "etc"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			return "", fmt.Errorf("sandbox rootfs: %w", err)
		}
	}
	for _, f := range []string{"etc/hosts", "etc/resolv.conf", "etc/hostname"} {
		if err := os.WriteFile(filepath.Join(tmp, f), nil, 0o644); err != nil {
			return "", fmt.Errorf("sandbox rootfs: %w", err)
		}
	}
	if err := writeSync(filepath.Join(tmp, "ketch-init"), data); err != nil {
		return "", fmt.Errorf("sandbox rootfs: %w", err)
	}
	// Another ketchd (a test, an upgrade) may have installed it meanwhile.
	if err := os.Rename(tmp, rootfs); err != nil && !errors.Is(err, os.ErrExist) {
		if _, serr := os.Stat(filepath.Join(rootfs, "ketch-init")); serr != nil {
			return "", fmt.Errorf("sandbox rootfs: %w", err)
		}
	}
	return rootfs, nil
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
