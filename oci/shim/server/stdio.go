package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"ketch.dev/ketch/oci/runc"
	"ketch.dev/ketch/oci/shim"
)

// containerIO is an app container's stdio. Without a terminal: a pipe per
// output stream whose write end the container holds and whose read end the
// shim's pump copies into the CRI log and to attached clients, and, when
// asked for, a stdin pipe held open for attach. With a terminal: the pty
// master, copied as stdout, and written to as stdin.
type containerIO struct {
	log       *criLog
	outputs   []*pumped  // our ends of stdout and stderr, or the pty master
	child     []*os.File // the container's ends, closed here once it holds them
	console   *os.File   // our end of the console socket until the master came
	stdinOnce bool
	copiers   sync.WaitGroup
	result    *capture // stdout kept as the result; nil without one

	mu       sync.Mutex
	stdin    io.WriteCloser       // stdin pipe or pty master; nil without stdin; guarded by mu
	master   *os.File             // the pty master; nil without a terminal; guarded by mu
	attached map[*attachment]bool // clients' writers; guarded by mu
}

// attachment is one attached client: output for it waits in a bounded
// queue that its own goroutine writes out, so a client that stops reading
// never holds up the container or the other clients; it is dropped once
// its queue is full.
type attachment struct {
	out, err io.Writer
	queue    chan attachChunk // closed when the client is dropped or detaches
}

type attachChunk struct {
	stderr bool
	b      []byte
}

// attachBacklog is how many pieces of output (each up to one read, 32 KiB)
// may wait for a slow client.
const attachBacklog = 64

func (a *attachment) run() {
	for c := range a.queue {
		w := a.out
		if c.stderr {
			w = a.err
		}
		if _, err := w.Write(c.b); err != nil {
			// Gone: drain until dropped, so broadcast never blocks.
			for range a.queue {
			}
			return
		}
	}
}

func newContainerIO(o shim.ContainerOptions, p *runc.Process, tty bool) (_ *containerIO, retErr error) {
	l, err := openCRILog(o.LogDir, o.LogPath)
	if err != nil {
		return nil, err
	}
	cio := &containerIO{log: l, stdinOnce: o.StdinOnce, attached: map[*attachment]bool{}}
	if o.ResultCap > 0 {
		cio.result = &capture{limit: o.ResultCap}
	}
	defer func() {
		if retErr != nil {
			cio.closeChildEnds()
			cio.close()
		}
	}()
	if tty {
		parent, child, err := shim.SockPair("console")
		if err != nil {
			return nil, err
		}
		cio.console, cio.child, p.ConsoleSocket = parent, append(cio.child, child), child
		return cio, nil
	}
	if o.Stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		cio.child, cio.stdin, p.Stdin = append(cio.child, r), w, r
	}
	for _, stream := range []string{"stdout", "stderr"} {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return nil, fmt.Errorf("%s pipe: %w", stream, err)
		}
		w := os.NewFile(uintptr(fds[1]), stream)
		cio.child = append(cio.child, w)
		if stream == "stdout" {
			p.Stdout = w
		} else {
			p.Stderr = w
		}
		if err := cio.copy(stream, fds[0]); err != nil {
			return nil, err
		}
	}
	return cio, nil
}

// copy has the pump copy fd, which it takes, as stream: to the log, to
// attached clients, and stdout to the result.
func (cio *containerIO) copy(stream string, fd int) error {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	p, err := output()
	if err != nil {
		unix.Close(fd)
		return err
	}
	w := &lines{log: cio.log, stream: stream}
	cio.copiers.Add(1)
	s, err := p.add(fd, func(b []byte) {
		if stream == "stdout" && cio.result != nil {
			_, _ = cio.result.Write(b)
		}
		cio.broadcast(stream, b)
		w.write(b)
	}, func() {
		w.end()
		cio.copiers.Done()
	})
	if err != nil {
		cio.copiers.Done()
		return err
	}
	cio.outputs = append(cio.outputs, s)
	return nil
}

// cut stops copying the output, read or not.
func (cio *containerIO) cut() {
	p, err := output()
	if err != nil {
		return // then nothing was copied
	}
	for _, s := range cio.outputs {
		p.cut(s)
	}
}

// startTTY takes the pty master runc's init sent once the container ran,
// and starts copying it; nothing to do without a terminal.
func (cio *containerIO) startTTY() error {
	if cio.console == nil {
		return nil
	}
	master, err := shim.RecvConsole(cio.console)
	cio.console.Close()
	cio.console = nil
	if err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	// Non-blocking for the pump, and so on Go's poller for stdin's writes:
	// a second descriptor of it is the pump's.
	master, err = pollable(master)
	if err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	cio.mu.Lock()
	cio.master, cio.stdin = master, master
	cio.mu.Unlock()
	rc, err := master.SyscallConn()
	if err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(m uintptr) { fd, derr = unix.FcntlInt(m, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return fmt.Errorf("terminal: %w", errors.Join(err, derr))
	}
	return cio.copy("stdout", fd)
}

// broadcast queues a piece of output for every attached client. A client
// whose queue is full (it stopped reading) is dropped rather than block the
// container.
func (cio *containerIO) broadcast(stream string, b []byte) {
	cio.mu.Lock()
	defer cio.mu.Unlock()
	for a := range cio.attached {
		select {
		case a.queue <- attachChunk{stderr: stream == "stderr", b: bytes.Clone(b)}:
		default:
			delete(cio.attached, a)
			close(a.queue)
		}
	}
}

// attach adds a client's writers; the returned func removes them.
func (cio *containerIO) attach(out, errOut io.Writer) func() {
	a := &attachment{out: out, err: errOut, queue: make(chan attachChunk, attachBacklog)}
	go a.run()
	cio.mu.Lock()
	cio.attached[a] = true
	cio.mu.Unlock()
	return func() {
		cio.mu.Lock()
		defer cio.mu.Unlock()
		if cio.attached[a] {
			delete(cio.attached, a)
			close(a.queue)
		}
	}
}

func (cio *containerIO) hasStdin() bool {
	cio.mu.Lock()
	defer cio.mu.Unlock()
	return cio.stdin != nil
}

// feedStdin copies a client's stdin into the container's. With stdin_once
// the container's stdin closes when the first client's does, as the CRI
// asks; a terminal's master stays open either way.
func (cio *containerIO) feedStdin(r io.Reader) {
	cio.mu.Lock()
	w, tty := cio.stdin, cio.master != nil
	cio.mu.Unlock()
	if w == nil {
		return
	}
	_, _ = io.Copy(w, r)
	if cio.stdinOnce && !tty {
		cio.mu.Lock()
		if cio.stdin != nil {
			cio.stdin.Close()
			cio.stdin = nil
		}
		cio.mu.Unlock()
	}
}

func (cio *containerIO) resize(w, h uint16) {
	cio.mu.Lock()
	master := cio.master
	cio.mu.Unlock()
	if master != nil {
		shim.SetWinsize(master, w, h)
	}
}

// closeChildEnds drops the shim's copies of the container's ends: the
// copiers see EOF once every process of the container has closed them.
func (cio *containerIO) closeChildEnds() {
	for _, f := range cio.child {
		f.Close()
	}
	cio.child = nil
}

// drain waits up to bound for the copiers to reach EOF, then cuts the
// pipes, so what a surviving background child writes later is dropped
// rather than keeping the exit from being recorded.
func (cio *containerIO) drain(bound time.Duration) {
	if !waitAtMost(&cio.copiers, bound) {
		cio.cut()
		cio.copiers.Wait()
	}
}

// waitAtMost waits for wg up to bound and reports whether it finished.
func waitAtMost(wg *sync.WaitGroup, bound time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(bound):
		return false
	}
}

func (cio *containerIO) close() {
	cio.cut()
	if cio.console != nil {
		cio.console.Close()
	}
	cio.copiers.Wait()
	cio.mu.Lock()
	if cio.stdin != nil && cio.master == nil {
		cio.stdin.Close()
	}
	cio.stdin = nil
	cio.mu.Unlock()
	cio.log.close()
}

// capture keeps the first limit bytes written to it, byte for byte, and
// notes whether more came; it never fails a write. One copier writes it,
// and it is read after the copier has ended.
type capture struct {
	limit     int
	buf       []byte
	truncated bool
}

func (c *capture) Write(b []byte) (int, error) {
	n := len(b)
	if room := c.limit - len(c.buf); room < len(b) {
		b, c.truncated = b[:max(room, 0)], true
	}
	c.buf = append(c.buf, b...)
	return n, nil
}
