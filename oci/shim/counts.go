package shim

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	ketchinit "ketch.dev/ketch/reaper"
)

// CountsDir, in a pod's directory, holds a file per ketch-init the shim
// started (named by its container's ID), where ketch-init keeps its
// ketchinit.Counts for ketchd's metrics.
const CountsDir = "counts"

// InitCounts are a ketch-init's counts of orphans reaped and signals
// forwarded.
type InitCounts = ketchinit.Counts

// countsFD is the descriptor ketch-init finds its counts file on: the
// first of libcontainer's ExtraFiles.
const countsFD = 3

// withCounts creates container id's counts file and gives ketch-init,
// args[0], the flag that makes it write there. The caller passes the file
// as the process's first extra file and closes it once the process runs.
func (s *Service) withCounts(id string, args []string) (*os.File, []string, error) {
	dir := filepath.Join(s.dir, CountsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("counts file: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, id), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("counts file: %w", err)
	}
	return f, slices.Insert(slices.Clone(args), 1, fmt.Sprintf("--counts-fd=%d", countsFD)), nil
}

// ReadCounts sums the counts of every ketch-init the shim of the pod whose
// directory is dir started. It needs no shim: ketch-init writes the files
// itself, and they outlive both.
func ReadCounts(dir string) (InitCounts, error) {
	var sum InitCounts
	files, err := os.ReadDir(filepath.Join(dir, CountsDir))
	if errors.Is(err, os.ErrNotExist) {
		return sum, nil
	}
	if err != nil {
		return sum, err
	}
	for _, f := range files {
		b, err := readAtMost(filepath.Join(dir, CountsDir, f.Name()), ketchinit.CountsSize)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return sum, err
		}
		// A file a container in init mode could reach and scribble on
		// (its ketch-init's own descriptor) must not break the sum.
		c, err := ketchinit.ParseCounts(b)
		if err != nil {
			slog.Warn("ketch-init counts unreadable", "file", filepath.Join(dir, CountsDir, f.Name()), "err", err)
			continue
		}
		sum.Reaped += c.Reaped
		sum.Forwarded += c.Forwarded
	}
	return sum, nil
}

func readAtMost(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	k, err := io.ReadFull(f, b)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	return b[:k], err
}
