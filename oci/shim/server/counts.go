package server

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"ketch.dev/ketch/oci/shim"
)

// countsFD is the descriptor ketch-init finds its counts file on: the
// first of libcontainer's ExtraFiles.
const countsFD = 3

// withCounts creates container id's counts file and gives ketch-init,
// args[0], the flag that makes it write there. The caller passes the file
// as the process's first extra file and closes it once the process runs.
func (s *Service) withCounts(id string, args []string) (*os.File, []string, error) {
	dir := filepath.Join(s.dir, shim.CountsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("counts file: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, id), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("counts file: %w", err)
	}
	return f, slices.Insert(slices.Clone(args), 1, fmt.Sprintf("--counts-fd=%d", countsFD)), nil
}
