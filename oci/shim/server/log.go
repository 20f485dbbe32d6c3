package server

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// MaxLog is the size past which the shim's log begins anew, its older part
// kept as <log>.1: at most about twice this per pod on the node's tmpfs.
const MaxLog = 1 << 20

// Log is the shim's log file, on fds 1 and 2 so that panics and the output
// of libcontainer's init land there too. Its Write, slog's, moves the file
// aside once it is past MaxLog. Safe for concurrent use.
type Log struct {
	path string

	mu      sync.Mutex
	written int64 // bytes in the current file, as last seen; guarded by mu
}

// OpenLog opens (appending to) the log at path on fds 1 and 2.
func OpenLog(path string) (*Log, error) {
	l := &Log{path: path}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("shim log on fd %d: %w", fd, err)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	l.written = fi.Size()
	return nil
}

func (l *Log) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written+int64(len(b)) > MaxLog {
		// What else writes to fds 1 and 2 (a container's init) is not
		// counted; it is little, and counted at the next open.
		if err := os.Rename(l.path, l.path+".1"); err == nil {
			_ = l.open()
		}
	}
	n, err := os.Stderr.Write(b)
	l.written += int64(n)
	return n, err
}
