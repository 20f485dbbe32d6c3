package shim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// Streams are a client's ends of an exec or attach session: what it
// types, where the output goes, and its terminal's size changes.
type Streams struct {
	Stdin  io.Reader // nil: no stdin
	Stdout io.Writer
	Stderr io.Writer // nil: stderr goes to Stdout (always so with a terminal)
	TTY    bool
	Resize <-chan Size
}

// Size is a terminal's size in characters.
type Size struct{ Width, Height uint16 }

// Exec runs args in running container id with the client's streams and
// returns its exit code once it has exited and its output is delivered.
// A command that cannot start answers 126 or 127, its reason written to
// the output. Cancelling ctx kills the command.
func (c *Client) Exec(ctx context.Context, id string, args []string, st Streams) (int, error) {
	return c.session(ctx, StreamRequest{Op: "exec", ID: id, Args: args, TTY: st.TTY}, st)
}

// Attach joins the client's streams to running container id's stdio until
// the container exits (its exit code is returned) or ctx ends.
func (c *Client) Attach(ctx context.Context, id string, st Streams) (int, error) {
	return c.session(ctx, StreamRequest{Op: "attach", ID: id, TTY: st.TTY}, st)
}

// session opens a session on the shim's stream socket. The shim gets the
// far ends of pipes (or, for an exec with a terminal, of a console socket
// runc's init sends the pty master back over) and this side copies
// between them and the client.
func (c *Client) session(ctx context.Context, req StreamRequest, st Streams) (int, error) {
	req.Pod = c.pod
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", filepath.Join(c.conn.dir, IOSockFile))
	if err != nil {
		return 0, fmt.Errorf("%s session with %s: %w: %w", req.Op, req.ID, errdefs.ErrUnavailable, err)
	}
	conn := nc.(*net.UnixConn)
	defer conn.Close()

	// far: the ends the shim gets, closed here once sent; near: ours,
	// closed when the session is over and its output delivered.
	var far, near []*os.File
	defer func() { closeFiles(far, near) }()
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			far = append(far, w)
			near = append(near, r)
		}
		return r, w, err
	}
	var out sync.WaitGroup
	var console, stdinW *os.File
	if st.Stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		req.Stdin, far, near, stdinW = true, append(far, r), append(near, w), w
	}
	switch {
	case req.TTY && req.Op == "exec":
		parent, child, err := SockPair("console")
		if err != nil {
			return 0, err
		}
		near, far, console = append(near, parent), append(far, child), parent
	default:
		r, _, err := pipe()
		if err != nil {
			return 0, err
		}
		copyOut(&out, st.Stdout, r)
		if st.Stderr != nil && !req.TTY {
			r, _, err := pipe()
			if err != nil {
				return 0, err
			}
			req.Stderr = true
			copyOut(&out, st.Stderr, r)
		}
	}
	msg, _ := json.Marshal(req)
	fds := make([]int, len(far))
	for i, f := range far {
		fds[i] = int(f.Fd())
	}
	if err := SendFDs(conn, msg, fds); err != nil {
		return 0, fmt.Errorf("%s session with %s: %w", req.Op, req.ID, err)
	}
	closeFiles(far, nil)
	far = nil

	replies := bufio.NewReader(conn)
	first, err := readReply(replies)
	if err != nil {
		return 0, fmt.Errorf("%s session with %s: %w", req.Op, req.ID, err)
	}
	if !first.Started {
		if first.ExitCode != nil { // the command could not start
			fmt.Fprintln(st.Stdout, first.Error)
			return *first.ExitCode, nil
		}
		return 0, fmt.Errorf("%s in %s: %s: %w", req.Op, req.ID, first.Error, kindError(first.Kind))
	}
	var master *os.File
	if console != nil {
		if master, err = RecvConsole(console); err != nil {
			return 0, err
		}
		near = append(near, master)
		copyOut(&out, st.Stdout, master)
		stdinW = master
	}
	if st.Stdin != nil {
		go func() {
			_, _ = io.Copy(stdinW, st.Stdin)
			if master == nil {
				stdinW.Close()
			}
		}()
	}
	go forwardResizes(ctx, st.Resize, master, conn)

	ended := make(chan StreamReply, 1)
	go func() {
		r, err := readReply(replies)
		if err != nil {
			r = StreamReply{Error: err.Error()}
		}
		ended <- r
	}()
	select {
	case <-ctx.Done():
		return 0, ctx.Err() // closing conn tells the shim to end the session
	case r := <-ended:
		// The output ends when the process's last writer closes; a
		// terminal's master ends when the last slave goes, after the exit.
		// Output a surviving background child keeps writing is not the
		// session's.
		done := make(chan struct{})
		go func() { out.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(drainTimeout):
		}
		if r.ExitCode == nil {
			return 0, fmt.Errorf("%s in %s ended without an exit code: %s: %w", req.Op, req.ID, r.Error, errdefs.ErrUnavailable)
		}
		return *r.ExitCode, nil
	}
}

func copyOut(wg *sync.WaitGroup, w io.Writer, r io.Reader) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(w, r)
	}()
}

// forwardResizes applies the client's terminal sizes: to the pty master
// when this side holds it (exec), else by telling the shim (attach).
func forwardResizes(ctx context.Context, sizes <-chan Size, master *os.File, conn *net.UnixConn) {
	if sizes == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case sz, ok := <-sizes:
			if !ok {
				return
			}
			if master != nil {
				SetWinsize(master, sz.Width, sz.Height)
				continue
			}
			b, _ := json.Marshal(Resize(sz))
			if _, err := conn.Write(append(b, '\n')); err != nil {
				return
			}
		}
	}
}

func readReply(r *bufio.Reader) (StreamReply, error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return StreamReply{}, fmt.Errorf("the shim closed the session: %w", errdefs.ErrUnavailable)
		}
		return StreamReply{}, err
	}
	var rep StreamReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return StreamReply{}, fmt.Errorf("session reply: %w", err)
	}
	return rep, nil
}

func kindError(kind string) error {
	switch kind {
	case "not_found":
		return errdefs.ErrNotFound
	case "failed_precondition":
		return errdefs.ErrFailedPrecondition
	case "invalid":
		return errdefs.ErrInvalidArgument
	}
	return errdefs.ErrUnknown
}

// drainTimeout bounds how long a session's end waits for the output a
// process left in its pipes, as the shim bounds an exit's.
const drainTimeout = 2 * time.Second
