package sandbox

import (
	"fmt"
	"os"
	"path/filepath"

	"ketch.dev/ketch/oci/shim"
)

// InitCounts sums what every pod's ketch-inits have counted, the pods
// removed since ketchd started included, so that the sum only grows (a
// Prometheus counter) until ketchd restarts.
func (m *Manager) InitCounts() (reaped, forwarded uint64, err error) {
	m.countsMu.Lock()
	defer m.countsMu.Unlock()
	sum := m.removedCounts
	dirs, err := filepath.Glob(filepath.Join(m.o.StateDir, "pods", "*"))
	if err != nil {
		return 0, 0, err
	}
	for _, dir := range dirs {
		c, err := shim.ReadCounts(dir)
		if err != nil {
			return 0, 0, fmt.Errorf("ketch-init counts: %w", err)
		}
		sum.Reaped += c.Reaped
		sum.Forwarded += c.Forwarded
	}
	return sum.Reaped, sum.Forwarded, nil
}

// keepCounts adds a pod's counts to removedCounts and removes its counts
// files, one step as InitCounts sees it: the pod's directory is about to go.
func (m *Manager) keepCounts(dir string) error {
	m.countsMu.Lock()
	defer m.countsMu.Unlock()
	c, err := shim.ReadCounts(dir)
	if err != nil {
		return fmt.Errorf("ketch-init counts: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(dir, shim.CountsDir)); err != nil {
		return err
	}
	m.removedCounts.Reaped += c.Reaped
	m.removedCounts.Forwarded += c.Forwarded
	return nil
}
