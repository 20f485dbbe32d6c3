package shim

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	ketchinit "ketch.dev/ketch/reaper"
)

// CountsDir, in a pod's directory, holds a file per ketch-init the shim
// started (named by its container's ID), where ketch-init keeps its
// ketchinit.Counts for ketchd's metrics.
const CountsDir = "counts"

// InitCounts are a ketch-init's counts of orphans reaped and signals
// forwarded.
type InitCounts = ketchinit.Counts

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
