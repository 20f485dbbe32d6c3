package server

import (
	"os"
	"testing"
)

// The test's own process: at least its open files and threads, and the
// soft limit it runs with.
func TestProcCounts(t *testing.T) {
	fds, _, threads := procCounts([]int{os.Getpid()})
	if fds < 3 || threads < 1 {
		t.Errorf("own process: %d fds, %d threads", fds, threads)
	}
	if openFilesLimit(os.Getpid()) == 0 {
		t.Error("own open files limit unread")
	}
	if fds, _, threads := procCounts([]int{1 << 30}); fds != 0 || threads != 0 {
		t.Errorf("a gone process counts %d fds, %d threads", fds, threads)
	}
}
