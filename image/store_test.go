package image

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// A snapshot directory that a ketchd which died mid-create renamed into
// place, without committing its record, is removed when the store opens:
// the next snapshot is given the same ID and would collide with it.
func TestOpenRemovesUnrecordedSnapshots(t *testing.T) {
	root := t.TempDir()
	open := func() *Store {
		s, err := Open(context.Background(), Options{Root: root})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	// One snapshot (ID 1) that the collector keeps: the snapshotter has
	// records, and a collection that removes nothing cleans nothing up.
	keep := snapshots.WithLabels(map[string]string{"containerd.io/gc.root": "test"})
	if _, err := s.Snapshotter().Prepare(s.ns(context.Background()), "first", "", keep); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(root, "snapshots", "snapshots", "2")
	if err := os.MkdirAll(filepath.Join(stray, "fs"), 0o755); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	if _, err := os.Stat(stray); err == nil {
		t.Error("the unrecorded snapshot directory survived Open")
	}
}
