package server

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"ketch.dev/ketch/oci/runc"
	"ketch.dev/ketch/oci/shim"
)

// containerIO is an app container's stdio. Without a terminal: a pipe per
// output stream whose write end the container holds and whose read end one
// goroutine copies into the CRI log and to attached clients, and, when
// asked for, a stdin pipe held open for attach. With a terminal: the pty
// master, copied as stdout, and written to as stdin.
type containerIO struct {
	log       *criLog
	readers   []*os.File // our ends of stdout and stderr, or the pty master
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
	for _, stream := range []string{"stdout", "stderr"} {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		cio.readers, cio.child = append(cio.readers, r), append(cio.child, w)
		if stream == "stdout" {
			p.Stdout = w
		} else {
			p.Stderr = w
		}
	}
	if o.Stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		cio.child, cio.stdin, p.Stdin = append(cio.child, r), w, r
	}
	for i, stream := range []string{"stdout", "stderr"} {
		cio.copy(stream, cio.readers[i])
	}
	return cio, nil
}

func (cio *containerIO) copy(stream string, r io.Reader) {
	cio.copiers.Add(1)
	go func() {
		defer cio.copiers.Done()
		cio.log.copy(stream, r, func(b []byte) {
			if stream == "stdout" && cio.result != nil {
				_, _ = cio.result.Write(b)
			}
			cio.broadcast(stream, b)
		})
	}()
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
	cio.mu.Lock()
	cio.master, cio.stdin = master, master
	cio.mu.Unlock()
	cio.readers = append(cio.readers, master)
	cio.copy("stdout", master)
	return nil
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
		closeFiles(cio.readers, nil)
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
	for _, r := range cio.readers {
		r.Close()
	}
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
