package server

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// maxLogLine is where a long line is cut into partial (P) entries, as
// containerd and CRI-O cut them; kubelet joins them again.
const maxLogLine = 16 << 10

// criLog writes a container's output in the CRI log format kubelet reads:
//
//	2026-11-22T14:00:00.123456789Z stdout F the line
//
// with P instead of F for every piece of a line but its last. The shim
// writes it, not ketchd, so a ketchd restart loses no line.
type criLog struct {
	dir, path string // see openLogFile

	mu  sync.Mutex
	f   *os.File // nil when discarding; guarded by mu
	buf []byte   // the entry being written, reused; guarded by mu
}

func openCRILog(dir, path string) (*criLog, error) {
	l := &criLog{dir: dir, path: path}
	if path == "" {
		return l, nil
	}
	f, err := openLogFile(dir, path)
	if err != nil {
		return nil, err
	}
	l.f = f
	return l, nil
}

// openLogFile opens the CRI log at path to append to it. The shim runs as
// root, and the log directory is kubelet's, which log collectors often
// mount into their pods: resolved inside dir (the pod's log directory),
// neither the path a request gave nor a symlink planted in the directory
// leads out of it, and the file itself is never a symlink, also when it is
// opened again at every rotation. Without dir (a container an older ketchd
// created) only the last rule holds.
func openLogFile(dir, path string) (*os.File, error) {
	const flags = os.O_WRONLY | os.O_APPEND | os.O_CREATE | syscall.O_NOFOLLOW
	if dir == "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("log directory of %s: %w", path, err)
		}
		f, err := os.OpenFile(path, flags, 0o640)
		if err != nil {
			return nil, fmt.Errorf("open log %s: %w", path, asNotFound(err))
		}
		return f, nil
	}
	rel, err := filepath.Rel(dir, path)
	if err != nil || !filepath.IsLocal(rel) {
		return nil, fmt.Errorf("log %s is not inside %s: %w", path, dir, errdefs.ErrInvalidArgument)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("log directory %s: %w", dir, asNotFound(err))
	}
	defer root.Close()
	// kubelet makes the pod's log directory; a log path with a directory
	// of its own in it (name/0.log) is the runtime's to make.
	if d := filepath.Dir(rel); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("log directory of %s: %w", path, logPathError(err))
		}
	}
	f, err := root.OpenFile(rel, flags, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, logPathError(err))
	}
	return f, nil
}

// logPathError says what a log path that cannot be opened is: missing, or
// not a file inside the log directory (a directory, a symlink, a path
// that escapes, a name too long or holding a NUL).
func logPathError(err error) error {
	var pe *os.PathError
	switch {
	case errors.Is(err, os.ErrNotExist):
		return asNotFound(err)
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENOTDIR),
		errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENAMETOOLONG),
		errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes"):
		return fmt.Errorf("%w: not a file inside the log directory: %w", errdefs.ErrInvalidArgument, err)
	}
	return err
}

// reopen opens the log path anew, after kubelet renamed the file away to
// rotate it.
func (l *criLog) reopen() error {
	if l.path == "" {
		return nil
	}
	f, err := openLogFile(l.dir, l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *criLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// entry writes one log entry in one write, so that entries of stdout and
// stderr never interleave within a line.
func (l *criLog) entry(stream string, partial bool, line []byte) {
	tag := "F"
	if partial {
		tag = "P"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	buf := time.Now().UTC().AppendFormat(l.buf[:0], time.RFC3339Nano)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, line...)
	buf = append(buf, '\n')
	_, _ = l.f.Write(buf) // a full disk must not stop the container; the line is lost
	l.buf = buf
}

// lines cuts a stream's output into log entries as it comes, piece by
// piece: a line that outgrows maxLogLine is logged in partial pieces, and
// the last piece of the output ends its line, newline or not.
type lines struct {
	log    *criLog
	stream string
	line   []byte // the current line's bytes not yet logged
}

func (w *lines) write(chunk []byte) {
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		end := len(chunk)
		if i >= 0 {
			end = i
		}
		if room := maxLogLine - len(w.line); end > room {
			w.line = append(w.line, chunk[:room]...)
			w.log.entry(w.stream, true, w.line)
			w.line, chunk = w.line[:0], chunk[room:]
			continue
		}
		w.line = append(w.line, chunk[:end]...)
		if i < 0 {
			break
		}
		w.log.entry(w.stream, false, w.line)
		w.line, chunk = w.line[:0], chunk[i+1:]
	}
}

func (w *lines) end() {
	if len(w.line) > 0 {
		w.log.entry(w.stream, false, w.line)
	}
	w.line = nil
}
