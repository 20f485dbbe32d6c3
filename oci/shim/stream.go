package shim

import (
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

// StreamRequest opens a session. Descriptors come with it, in order:
// stdin when Stdin; then, for an exec with TTY, the console socket that
// runc's init sends the pty master over; otherwise stdout, and stderr when
// Stderr.
type StreamRequest struct {
	Op     string   `json:"op"` // "exec" or "attach"
	Pod    string   `json:"pod"`
	ID     string   `json:"id"`
	Args   []string `json:"args,omitempty"`
	TTY    bool     `json:"tty,omitempty"`
	Stdin  bool     `json:"stdin,omitempty"`
	Stderr bool     `json:"stderr,omitempty"`
}

// StreamReply is a line the shim writes on the session's connection: once
// it started (or failed), and once it ended.
type StreamReply struct {
	Started  bool   `json:"started,omitempty"`
	Error    string `json:"error,omitempty"`
	Kind     string `json:"kind,omitempty"` // the errdefs class of Error
	ExitCode *int   `json:"exit_code,omitempty"`
}

// Resize is what an attach client sends on its connection when the
// terminal it shows the container in changes size.
type Resize struct {
	Width  uint16 `json:"w"`
	Height uint16 `json:"h"`
}

// SetWinsize resizes the terminal behind a pty master.
func SetWinsize(master *os.File, w, h uint16) {
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: w, Row: h}); err != nil {
		slog.Debug("resize terminal", "err", err)
	}
}
