package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"ketch.dev/ketch/oci/shim"
)

// serveStreams accepts sessions on l until it is closed.
func (g *group) serveStreams(l *net.UnixListener) {
	for {
		conn, err := l.AcceptUnix()
		if err != nil {
			return
		}
		go g.session(conn)
	}
}

// session runs one exec or attach session, of the pod its request names.
func (g *group) session(conn *net.UnixConn) {
	defer conn.Close()
	msg, files, err := shim.RecvFDs(conn)
	if err != nil {
		return
	}
	defer closeFiles(files, nil)
	var req shim.StreamRequest
	if err := json.Unmarshal(msg, &req); err != nil {
		reply(conn, shim.StreamReply{Error: "bad request: " + err.Error(), Kind: "invalid"})
		return
	}
	s, err := g.pod(req.Pod)
	if err == nil {
		switch req.Op {
		case "exec":
			err = s.execSession(conn, req, files)
		case "attach":
			err = s.attachSession(conn, req, files)
		default:
			err = fmt.Errorf("stream op %q: %w", req.Op, errdefs.ErrInvalidArgument)
		}
	}
	if err != nil {
		reply(conn, shim.StreamReply{Error: err.Error(), Kind: errKind(err)})
	}
}

func reply(conn *net.UnixConn, r shim.StreamReply) {
	b, _ := json.Marshal(r)
	_, _ = conn.Write(append(b, '\n'))
}

func errKind(err error) string {
	switch {
	case errdefs.IsNotFound(err):
		return "not_found"
	case errdefs.IsFailedPrecondition(err):
		return "failed_precondition"
	case errdefs.IsInvalidArgument(err):
		return "invalid"
	}
	return ""
}

// take hands out the session's descriptors in request order.
type take struct {
	files []*os.File
	i     int
}

func (t *take) next() (*os.File, error) {
	if t.i >= len(t.files) {
		return nil, fmt.Errorf("stream session: too few descriptors: %w", errdefs.ErrInvalidArgument)
	}
	f := t.files[t.i]
	t.i++
	return f, nil
}

// execSession runs a command in a running container with the session's
// stdio and replies with its exit code; a client that hangs up kills it.
func (s *Service) execSession(conn *net.UnixConn, req shim.StreamRequest, files []*os.File) error {
	c, err := s.execTarget(req.ID, req.Args)
	if err != nil {
		return err
	}
	proc := c.execProcess(req.Args, req.TTY)
	fds := &take{files: files}
	if req.Stdin {
		if proc.Stdin, err = fds.next(); err != nil {
			return err
		}
	}
	if req.TTY {
		if proc.ConsoleSocket, err = fds.next(); err != nil {
			return err
		}
	} else {
		out, err := fds.next()
		if err != nil {
			return err
		}
		proc.Stdout, proc.Stderr = out, out
		if req.Stderr {
			if proc.Stderr, err = fds.next(); err != nil {
				return err
			}
		}
	}
	pid, done, err := s.runExec(c, proc)
	// The process holds its own copies; ours would keep the client's
	// readers from seeing EOF.
	closeFiles(files, nil)
	if err != nil {
		code := execFailureCode(err)
		reply(conn, shim.StreamReply{Error: err.Error(), ExitCode: &code})
		return nil
	}
	reply(conn, shim.StreamReply{Started: true})
	select {
	case e := <-done:
		reply(conn, shim.StreamReply{ExitCode: &e.Code})
	case <-hangUp(conn):
		killTree(pid)
		<-done
	}
	return nil
}

// execTarget is the running app container a command may run in.
func (s *Service) execTarget(id string, args []string) (*container, error) {
	if len(args) == 0 || args[0] == "" {
		return nil, fmt.Errorf("exec in %s: empty command: %w", id, errdefs.ErrInvalidArgument)
	}
	c, err := s.get(id)
	if err != nil {
		return nil, err
	}
	if c.process == nil {
		return nil, fmt.Errorf("exec in %s: the sandbox runs no commands: %w", id, errdefs.ErrInvalidArgument)
	}
	if !c.running() {
		return nil, fmt.Errorf("exec in %s: not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	return c, nil
}

// hangUp is closed once the client closes its end of conn. Sessions send
// nothing after their request but resize lines, handled by the attach.
func hangUp(conn *net.UnixConn) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, conn)
		close(gone)
	}()
	return gone
}

// attachSession joins the session's stdio to a running container's: its
// output from now on goes to the client as well as to the log, and the
// client's stdin to the container's stdin. It ends when the container
// exits (replying its exit code) or the client hangs up.
func (s *Service) attachSession(conn *net.UnixConn, req shim.StreamRequest, files []*os.File) error {
	c, err := s.get(req.ID)
	if err != nil {
		return err
	}
	cio := c.stdio()
	if c.process == nil || cio == nil || !c.running() {
		return fmt.Errorf("attach to %s: not running: %w", req.ID, errdefs.ErrFailedPrecondition)
	}
	fds := &take{files: files}
	var stdin *os.File
	if req.Stdin {
		if stdin, err = fds.next(); err != nil {
			return err
		}
		if !cio.hasStdin() {
			return fmt.Errorf("attach to %s: the container was not created with stdin: %w", req.ID, errdefs.ErrFailedPrecondition)
		}
	}
	out, err := fds.next()
	if err != nil {
		return err
	}
	errOut := out
	if req.Stderr {
		if errOut, err = fds.next(); err != nil {
			return err
		}
	}
	// The shim alone uses these ends: made pollable, a stalled client's
	// write and a stdin read end with the session.
	for _, f := range []**os.File{&stdin, &out, &errOut} {
		if *f != nil && !(f == &errOut && !req.Stderr) {
			if *f, err = pollable(*f); err != nil {
				return err
			}
		}
	}
	if !req.Stderr {
		errOut = out
	}
	detach := cio.attach(out, errOut)
	defer detach()
	if stdin != nil {
		defer stdin.Close() // ends feedStdin's copy with the session
		go cio.feedStdin(stdin)
	}
	reply(conn, shim.StreamReply{Started: true})
	lines := bufio.NewScanner(conn)
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for lines.Scan() {
			var r shim.Resize
			if json.Unmarshal(lines.Bytes(), &r) == nil {
				cio.resize(r.Width, r.Height)
			}
		}
	}()
	select {
	case <-c.exited:
		code := c.exit.Code
		reply(conn, shim.StreamReply{ExitCode: &code})
	case <-gone:
	}
	return nil
}

// pollable returns f (closed) as a non-blocking file on Go's poller, so
// that closing it ends a read or write blocked on it.
func pollable(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	cerr := rc.Control(func(fd uintptr) {
		if nfd, err = unix.Dup(int(fd)); err == nil {
			unix.CloseOnExec(nfd)
			err = unix.SetNonblock(nfd, true)
		}
	})
	f.Close()
	if err = errors.Join(cerr, err); err != nil {
		if nfd >= 0 {
			unix.Close(nfd)
		}
		return nil, err
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}
