package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// Usage is the disk the image store takes: what ImageFsInfo reports.
type Usage struct {
	Mountpoint string
	Bytes      uint64
	Inodes     uint64
}

// Usage walks the store's directory, counting each inode once so hard links
// between layers are not counted twice.
func (s *Store) Usage(ctx context.Context) (Usage, error) {
	u := Usage{Mountpoint: s.opts.Root}
	seen := map[uint64]struct{}{}
	err := filepath.WalkDir(s.opts.Root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			// Snapshots come and go during the walk.
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if _, dup := seen[st.Ino]; dup {
			return nil
		}
		seen[st.Ino] = struct{}{}
		u.Inodes++
		u.Bytes += uint64(st.Blocks) * 512
		return nil
	})
	if err != nil {
		return Usage{}, fmt.Errorf("image store usage: %w", err)
	}
	return u, nil
}
